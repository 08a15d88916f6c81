# Reads installed package versions and service states back from the host, in one process
# (instead of package_facts, which loads the whole APT cache, and service_facts, which asks
# every init script). Arguments: package names, then "--", then service names; unsafe names
# are skipped. Prints one JSON object: {"packages": {name: version}, "services": {name:
# running|stopped}}; packages not installed and services the host does not know are left out,
# as package_facts and service_facts leave them out.
set -u
printf '{"packages": {'
sep=''
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  name=$1
  shift
  case $name in '' | [!a-z0-9]* | *[!a-z0-9.+-]*) continue ;; esac
  line=$(dpkg-query --show --showformat='${db:Status-Abbrev}${Version}' -- "$name" 2>/dev/null) || continue
  case $line in
    ?i*) printf '%s"%s": "%s"' "$sep" "$name" "${line#???}"; sep=', ' ;;
  esac
done
[ $# -gt 0 ] && shift
printf '}, "services": {'
sep=''
for name in "$@"; do
  case $name in '' | [!A-Za-z0-9]* | *[!A-Za-z0-9@._+-]*) continue ;; esac
  if [ -x "/etc/init.d/$name" ]; then
    # what `service --status-all` (service_facts' source without systemd) reports
    if service "$name" status >/dev/null 2>&1; then state=running; else state=stopped; fi
  elif [ -d /run/systemd/system ] && systemctl cat -- "$name.service" >/dev/null 2>&1; then
    if systemctl is-active --quiet -- "$name.service"; then state=running; else state=stopped; fi
  else
    continue
  fi
  printf '%s"%s": "%s"' "$sep" "$name" "$state"
  sep=', '
done
printf '}}\n'
