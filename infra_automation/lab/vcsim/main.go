// vcsim for the infra-automation lab: VMware's vCenter simulator (govmomi 0.24) with the
// inventory our lab expects, serving plain HTTP on 127.0.0.1.
//
// Configuration comes from the environment, never from the command line (ps shows argv):
//
//	VCSIM_PASSWORD_FILE  file holding the only password accepted (required)
//	VCSIM_USER           the only user name accepted (default "user")
//	VCSIM_LISTEN         address to listen on (default "127.0.0.1:0": the kernel picks a port)
//	VCSIM_URL_FILE       where to write the service URL once it answers (no credentials in it)
//	VCSIM_TEMPLATE       name of the VM template to clone from (default "debian12-template")
//
// Model: datacenter DC0, cluster DC0_C0 (3 hosts, resource pool "Resources"), a standalone
// host DC0_H0, datastore LocalDS_0, distributed switch DVS0 with portgroup DC0_DVPG0, one VM
// per resource pool; the cluster's VM becomes the powered-off template VCSIM_TEMPLATE.
//
// Build: GOPATH=/usr/share/gocode GO111MODULE=off go build -o vcsim main.go
package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "vcsim: "+format+"\n", args...)
	os.Exit(1)
}

// makeTemplate turns the cluster's first VM into a powered-off template named name.
func makeTemplate(u *url.URL, name string) error {
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	defer func() { _ = c.Logout(ctx) }()

	finder := find.NewFinder(c.Client, true)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return err
	}
	finder.SetDatacenter(dc)
	vm, err := finder.VirtualMachine(ctx, "DC0_C0_RP0_VM0")
	if err != nil {
		return err
	}
	state, err := vm.PowerState(ctx)
	if err != nil {
		return err
	}
	if state == types.VirtualMachinePowerStatePoweredOn {
		task, err := vm.PowerOff(ctx)
		if err != nil {
			return err
		}
		if err = task.Wait(ctx); err != nil {
			return fmt.Errorf("power off: %w", err)
		}
	}
	task, err := vm.Rename(ctx, name)
	if err != nil {
		return err
	}
	if err = task.Wait(ctx); err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	return vm.MarkAsTemplate(ctx)
}

func writeAtomic(path, text string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func main() {
	pwFile := os.Getenv("VCSIM_PASSWORD_FILE")
	if pwFile == "" {
		fail("VCSIM_PASSWORD_FILE is not set")
	}
	raw, err := os.ReadFile(pwFile)
	if err != nil {
		fail("cannot read the password file: %v", err)
	}
	password := strings.TrimSpace(string(raw))
	if len(password) < 8 {
		fail("the password file holds fewer than 8 characters")
	}
	user := env("VCSIM_USER", "user")

	m := simulator.VPX()
	m.Datacenter = 1
	m.Cluster = 1
	m.ClusterHost = 3
	m.Host = 1
	m.Datastore = 1
	m.Portgroup = 1
	m.Machine = 1
	if err = m.Create(); err != nil {
		fail("create model: %v", err)
	}
	defer m.Remove()

	// Only user:password may log in (simulator.SessionManager.validLogin compares them
	// with Listen.User unless it is the package default, which accepts anything).
	m.Service.Listen = &url.URL{
		Host: env("VCSIM_LISTEN", "127.0.0.1:0"),
		User: url.UserPassword(user, password),
	}
	s := m.Service.NewServer()
	defer s.Close()

	if err = makeTemplate(s.URL, env("VCSIM_TEMPLATE", "debian12-template")); err != nil {
		s.Close()
		m.Remove()
		fail("template: %v", err)
	}

	public := *s.URL
	public.User = nil
	fmt.Println(public.String())
	if path := os.Getenv("VCSIM_URL_FILE"); path != "" {
		if err = writeAtomic(path, public.String()+"\n"); err != nil {
			s.Close()
			m.Remove()
			fail("write url file: %v", err)
		}
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	fmt.Println("vcsim: stopping")
}
