"""Workers: the steps of runs on any number of machines, through Celery.

::

    infra worker --queues runs               # a scheduler: takes the queued runs
    infra worker --queues network -c 8       # next to the routers
    infra worker --queues vmware,os          # next to vCenter, where SSH reaches the hosts

The database stays the truth (runs, steps, events, leases); the broker (Redis by default,
RabbitMQ by URL) only carries two kinds of message, both safe to lose or to repeat:

- ``infra.schedule_run(run_id)`` on the scheduler queue (``scheduler_queue``, "runs"): a worker
  serving it schedules the queued run (:class:`~infra_automation.workers.service.SchedulerService`),
  holding the project lease of the run, so that one place at a time schedules a run;
- ``infra.run_step(run_id, step_id, queue)`` on the queue of the step's department
  (``[queues]`` of infra.toml, which then maps every department of the catalog: see
  :mod:`~infra_automation.workers.queues`; without it the department's name): a worker
  serving it takes the lease ``step:<run>:<step>``, checks in the record that the step has
  not run, runs it (:meth:`infra_automation.engine.Engine.run_step`) and heartbeats the
  lease meanwhile.

Faults: a step whose worker died (its lease expired while the step reads ``running``) is
recorded ``interrupted``; it is dispatched again when its executor is safe to re-run
(:func:`~infra_automation.workers.dispatch.rerun_safe`), otherwise the run ends failed and waits
for ``infra resume``. A run whose scheduler died reads ``interrupted`` once its lease expires
and is resumed by another scheduler when every unfinished step is safe to re-run. A step
recorded ``success`` is never run again (the worker checks the record under the step lease).
Lost messages (a broker restart) are sent again from the record: queued runs by the
schedulers' sweep, steps not started within the lease TTL by their run's scheduler.
"""
