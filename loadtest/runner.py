"""Drives the load: closed or open loop, in one or several client processes.

Every worker process runs one asyncio loop. They agree on a start instant in
wall-clock time and then keep time with their own monotonic clock, so records
from all workers share one time axis (to the ms-level accuracy of the OS
wall clock) and are merged as raw samples.

Self-check: each worker measures how late its event loop wakes up (a 10 ms
ticker; its lateness delays timestamps by as much) and its own CPU time. A
loaded loop or a saturated core means the client, not the server, may be
what is measured; the result is then marked invalid.
"""

import asyncio
import multiprocessing
import queue
import time
from dataclasses import dataclass, field

import aiohttp

from loadtest.client import build_body, fetch_first_model, stream_request
from loadtest.config import LoadTestConfig
from loadtest.jobs import Job
from loadtest.progress import LocalCounters, ProgressPrinter, SharedCounters
from loadtest.records import RequestRecord
from loadtest.schedule import closed_loop_start_offsets_s, open_loop_arrivals_s

LOOP_LAG_TICK_S = 0.010
# Workers start this long after the parent decides, so all are ready at t=0.
MULTIPROCESS_START_DELAY_S = 3.0


@dataclass
class WorkerPlan:
    config: LoadTestConfig
    model: str
    worker_id: int
    jobs: list[Job]
    start_at_unix: float
    # Open loop: (scheduled offset in s, job index). Closed loop: unused.
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    # Closed loop: start offsets of this worker's users, and its share of num_requests.
    user_offsets_s: list[float] = field(default_factory=list)
    num_jobs_quota: int | None = None
    job_index_start: int = 0
    job_index_step: int = 1
    # Multi-tenant closed loop: each tenant's user start offsets and own quota (None: shares num_jobs_quota).
    tenant_user_offsets_s: dict[str, list[float]] = field(default_factory=dict)
    tenant_quotas: dict[str, int | None] = field(default_factory=dict)


@dataclass
class WorkerResult:
    worker_id: int
    records: list[RequestRecord]
    loop_lag_ms: list[float]
    cpu_s: float
    wall_s: float


class _Clock:
    """Seconds since the shared run start, on this process's monotonic clock."""

    def __init__(self, start_at_unix: float):
        self.origin = time.perf_counter() + (start_at_unix - time.time())

    def __call__(self) -> float:
        return time.perf_counter() - self.origin

    async def sleep_until(self, t_s: float) -> None:
        delay = t_s - self()
        if delay > 0:
            await asyncio.sleep(delay)


async def _monitor_loop_lag(stop: asyncio.Event, samples_ms: list[float]) -> None:
    while not stop.is_set():
        expected = time.perf_counter() + LOOP_LAG_TICK_S
        await asyncio.sleep(LOOP_LAG_TICK_S)
        samples_ms.append(max(0.0, (time.perf_counter() - expected) * 1000.0))


class _Worker:
    def __init__(self, plan: WorkerPlan, counters: LocalCounters):
        self.plan = plan
        self.config = plan.config
        self.counters = counters
        self.clock = _Clock(plan.start_at_unix)
        self.records: list[RequestRecord] = []
        self.url = plan.config.api_base + plan.config.stream_path
        self.headers = dict(plan.config.headers)
        if plan.config.api_key:
            self.headers["Authorization"] = f"Bearer {plan.config.api_key}"
        self.tenant_headers = {t.name: t.request_headers(self.headers) for t in plan.config.tenants}
        self.next_request_id = plan.worker_id * 10_000_000
        self.num_jobs_started = 0
        # When this worker last sent a request (run s), or will first: `_drain` waits from here.
        self.last_send_s = max([0.0, *plan.user_offsets_s,
                                *(t for offsets in plan.tenant_user_offsets_s.values() for t in offsets)])
        self.slots = asyncio.Semaphore(plan.config.max_inflight) if plan.config.max_inflight else None

    async def run_job(self, session: aiohttp.ClientSession, job_index: int, scheduled_s: float | None,
                      tenant: str | None = None) -> None:
        job = self.plan.jobs[job_index % len(self.plan.jobs)]
        headers = self.headers if tenant is None else self.tenant_headers[tenant]
        messages = [dict(m) for m in job.history]
        for turn_index, turn in enumerate(job.turns):
            messages.append({"role": "user", "content": turn.text})
            body = build_body(
                endpoint=self.config.endpoint,
                model=self.plan.model,
                messages=messages,
                prompt=turn.text,
                max_tokens=turn.max_tokens,
                ignore_eos=self.config.ignore_eos,
                temperature=self.config.temperature,
                extra_body=self.config.extra_body,
            )
            record = RequestRecord(
                request_id=self.next_request_id,
                job_id=job.job_id,
                turn=turn_index,
                worker_id=self.plan.worker_id,
                scheduled_s=scheduled_s if turn_index == 0 else None,
                send_s=self.clock(),
                max_tokens=turn.max_tokens,
                expected_input_tokens=turn.expected_input_tokens,
                tenant=tenant,
            )
            self.next_request_id += 1
            self.records.append(record)
            self.counters.on_start()
            if self.slots is not None:
                async with self.slots:
                    self._sending()
                    text = await self._send(session, body, record, headers)
            else:
                self._sending()
                text = await self._send(session, body, record, headers)
            record.output_text = text
            self.counters.on_done(record.ok)
            if not record.ok:
                return
            messages.append({"role": "assistant", "content": text})

    def _sending(self) -> None:
        """A request leaves now (after its `max_inflight` slot, if any): `_drain` counts from the last one."""
        self.last_send_s = max(self.last_send_s, self.clock())

    async def _send(self, session: aiohttp.ClientSession, body: dict, record: RequestRecord,
                    headers: dict[str, str]) -> str:
        return await stream_request(
            session, self.url, body, record, self.clock, headers, self.config.request_timeout_s
        )

    async def closed_user(self, session: aiohttp.ClientSession, offset_s: float, quota: list[int],
                          tenant: str | None = None) -> None:
        await self.clock.sleep_until(offset_s)
        duration_s = self.config.duration_s
        while quota[0] > 0 and (duration_s is None or self.clock() < duration_s):
            quota[0] -= 1
            job_index = self.plan.job_index_start + self.num_jobs_started * self.plan.job_index_step
            self.num_jobs_started += 1
            await self.run_job(session, job_index, scheduled_s=None, tenant=tenant)

    def closed_users(self, session: aiohttp.ClientSession) -> list[asyncio.Task]:
        """One task per user; with tenants, each tenant's users spend its own quota or the shared one."""
        shared = [self.plan.num_jobs_quota if self.plan.num_jobs_quota is not None else 10**12]
        if not self.config.tenants:
            return [asyncio.create_task(self.closed_user(session, t, shared)) for t in self.plan.user_offsets_s]
        tasks = []
        for name, offsets in self.plan.tenant_user_offsets_s.items():
            own = self.plan.tenant_quotas.get(name)
            quota = shared if own is None else [own]
            tasks += [asyncio.create_task(self.closed_user(session, t, quota, name)) for t in offsets]
        return tasks

    async def run(self) -> WorkerResult:
        stop = asyncio.Event()
        lag_ms: list[float] = []
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        cpu_start = time.process_time()
        await self.clock.sleep_until(0.0)
        wall_start = time.perf_counter()
        monitor = asyncio.create_task(_monitor_loop_lag(stop, lag_ms))
        tasks: list[asyncio.Task] = []
        async with aiohttp.ClientSession(connector=connector) as session:
            if self.config.mode == "closed":
                tasks = self.closed_users(session)
            else:
                for scheduled_s, job_index in self.plan.arrivals:
                    await self.clock.sleep_until(scheduled_s)
                    tasks.append(asyncio.create_task(self.run_job(session, job_index, scheduled_s)))
            await self._drain(tasks)
        stop.set()
        await monitor
        for record in self.records:
            if record.done_s is None:
                record.error_kind, record.error = "cancelled_at_end", "still running when the drain timeout expired"
                record.done_s = self.clock()
        return WorkerResult(
            worker_id=self.plan.worker_id,
            records=self.records,
            loop_lag_ms=lag_ms,
            cpu_s=time.process_time() - cpu_start,
            wall_s=time.perf_counter() - wall_start,
        )

    async def _drain(self, tasks: list[asyncio.Task]) -> None:
        """Wait for every task, and give up once no request has been sent for the drain budget (`drain_timeout_s`,
        else the request timeout + 5 s, past which every request still running has outlived its own timeout).
        Counted from the last send, or from this call if later (an open loop's last arrival may not have sent yet):
        a closed loop keeps sending until its quota or duration is spent, however long that takes. A count-bounded
        closed run is bounded by its requests' timeouts: at most ceil(requests / users) x turns x timeout."""
        if not tasks:
            return
        budget_s = self.config.drain_timeout_s or self.config.request_timeout_s + 5.0
        self.last_send_s = max(self.last_send_s, self.clock())
        pending = set(tasks)
        while pending and (wait_s := self.last_send_s + budget_s - self.clock()) > 0:
            _, pending = await asyncio.wait(pending, timeout=wait_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            if task not in pending and task.exception() is not None:
                raise task.exception()


def make_plans(config: LoadTestConfig, model: str, jobs: list[Job], start_at_unix: float) -> list[WorkerPlan]:
    """Split the load across config.workers processes, deterministically."""
    num_workers = config.workers
    plans = []
    if config.mode == "open":
        arrivals = open_loop_arrivals_s(
            config.rate_rps,
            burstiness=config.burstiness,
            num_requests=config.num_requests,
            duration_s=config.duration_s,
            ramp_up_s=config.ramp_up_s,
            seed=config.seed,
        )
        for w in range(num_workers):
            mine = [(t, i) for i, t in enumerate(arrivals) if i % num_workers == w]
            plans.append(WorkerPlan(config, model, w, jobs, start_at_unix, arrivals=mine))
        return plans
    offsets = closed_loop_start_offsets_s(config.concurrency, config.ramp_up_s)
    tenant_offsets = {t.name: closed_loop_start_offsets_s(t.concurrency, config.ramp_up_s) for t in config.tenants}
    for w in range(num_workers):
        plans.append(
            WorkerPlan(
                config, model, w, jobs, start_at_unix,
                user_offsets_s=offsets[w::num_workers],
                num_jobs_quota=_share(config.num_requests, w, num_workers),
                job_index_start=w,
                job_index_step=num_workers,
                tenant_user_offsets_s={name: o[w::num_workers] for name, o in tenant_offsets.items()},
                # A tenant's own quota goes to the workers that run its users.
                tenant_quotas={t.name: None if t.num_requests is None else
                               _share(t.num_requests, w, min(num_workers, t.concurrency)) if w < t.concurrency
                               else 0 for t in config.tenants},
            )
        )
    return plans


def _share(total: int | None, worker: int, num_workers: int) -> int | None:
    """Worker `worker`'s part of `total` requests (None: unbounded)."""
    if total is None:
        return None
    return total // num_workers + (1 if worker < total % num_workers else 0)


def _worker_process_main(plan: WorkerPlan, shared_counts, results: multiprocessing.Queue) -> None:
    result = asyncio.run(_Worker(plan, SharedCounters(shared_counts)).run())
    results.put(result)


async def resolve_model(config: LoadTestConfig) -> str:
    if config.model:
        return config.model
    headers = dict(config.headers)
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    elif config.tenants:
        headers = config.tenants[0].request_headers(headers)
    async with aiohttp.ClientSession() as session:
        return await fetch_first_model(session, config.api_base, headers)


def _expected_run_s(config: LoadTestConfig) -> float:
    if config.duration_s is not None:
        return config.duration_s + config.ramp_up_s
    if config.mode == "open":
        return config.num_requests / config.rate_rps + config.ramp_up_s
    # A count-bounded closed loop: as long as its requests, one after another, each at its timeout (a bound, not an
    # estimate: the parent's deadline must not end a slow run that is still making progress).
    jobs = (config.num_requests or 0) + sum(t.num_requests or 0 for t in config.tenants)
    return max(3600.0, jobs * config.turns * config.request_timeout_s + config.ramp_up_s)


def run_load(config: LoadTestConfig, model: str, jobs: list[Job], progress: ProgressPrinter) -> list[WorkerResult]:
    """Run the whole load; return one WorkerResult per client process."""
    if config.workers == 1:
        return [asyncio.run(_run_in_process(config, model, jobs, progress))]
    context = multiprocessing.get_context("spawn")
    shared_counts = context.Array("q", 3)
    results_queue = context.Queue()
    start_at_unix = time.time() + MULTIPROCESS_START_DELAY_S
    plans = make_plans(config, model, jobs, start_at_unix)
    processes = [
        context.Process(target=_worker_process_main, args=(plan, shared_counts, results_queue), daemon=True)
        for plan in plans
    ]
    for process in processes:
        process.start()
    counters = SharedCounters(shared_counts)
    deadline = time.monotonic() + MULTIPROCESS_START_DELAY_S + _expected_run_s(config) + config.request_timeout_s + 60
    results: list[WorkerResult] = []
    try:
        while len(results) < len(processes):
            if time.monotonic() > deadline:
                raise TimeoutError("client worker processes did not finish in time")
            try:
                results.append(results_queue.get(timeout=0.5))
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in processes):
                    raise RuntimeError("a client worker process failed; see its traceback above")
            progress.update(counters.snapshot(), max(0.0, time.time() - start_at_unix))
        progress.update(counters.snapshot(), max(0.0, time.time() - start_at_unix), final=True)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    return sorted(results, key=lambda r: r.worker_id)


async def _run_in_process(config: LoadTestConfig, model: str, jobs: list[Job], progress: ProgressPrinter) -> WorkerResult:
    start_at_unix = time.time() + 0.05
    (plan,) = make_plans(config, model, jobs, start_at_unix)
    counters = LocalCounters()
    worker_task = asyncio.create_task(_Worker(plan, counters).run())
    while not worker_task.done():
        await asyncio.wait([worker_task], timeout=0.5)
        progress.update(counters.snapshot(), max(0.0, time.time() - start_at_unix))
    progress.update(counters.snapshot(), max(0.0, time.time() - start_at_unix), final=True)
    return worker_task.result()
