"""Counters for `/metrics` in the Prometheus text format, kept by hand (no client library needed).

Everything runs on the server's event loop, so plain integers need no locks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class Metrics:
    requests: Counter = field(default_factory=Counter)  # (route, status) -> count
    request_seconds: Counter = field(default_factory=Counter)  # route -> total latency
    observations: int = 0  # observations answered by the model
    batches: int = 0  # model calls
    batch_size_sum: int = 0
    batch_size_max: int = 0
    batch_size_buckets: Counter = field(default_factory=Counter)  # upper bound -> count (non-cumulative)
    inference_seconds: float = 0.0
    rejected_queue_full: int = 0
    cancelled: int = 0  # observations dropped because their client went away before they ran
    queue_depth: int = 0
    queue_capacity: int = 0

    def record_request(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        self.request_seconds[route] += seconds

    def record_batch(self, size: int, seconds: float) -> None:
        self.batches += 1
        self.observations += size
        self.batch_size_sum += size
        self.batch_size_max = max(self.batch_size_max, size)
        self.batch_size_buckets[next((b for b in BATCH_SIZE_BUCKETS if size <= b), float("inf"))] += 1
        self.inference_seconds += seconds

    def render(self) -> str:
        lines = [
            "# HELP robovla_requests_total Requests answered, by route and HTTP status.",
            "# TYPE robovla_requests_total counter",
        ]
        for (route, status), count in sorted(self.requests.items()):
            lines.append(f'robovla_requests_total{{route="{route}",status="{status}"}} {count}')
        lines += ["# HELP robovla_request_seconds_total Time spent answering requests, by route.",
                  "# TYPE robovla_request_seconds_total counter"]
        for route, seconds in sorted(self.request_seconds.items()):
            lines.append(f'robovla_request_seconds_total{{route="{route}"}} {seconds:.6f}')
        lines += ["# HELP robovla_batch_size Observations per model call.", "# TYPE robovla_batch_size histogram"]
        cumulative = 0
        for bound in (*BATCH_SIZE_BUCKETS, float("inf")):
            cumulative += self.batch_size_buckets[bound]
            label = "+Inf" if bound == float("inf") else str(bound)
            lines.append(f'robovla_batch_size_bucket{{le="{label}"}} {cumulative}')
        lines += [f"robovla_batch_size_sum {self.batch_size_sum}", f"robovla_batch_size_count {self.batches}"]
        for name, kind, help_text, value in (
            ("robovla_batch_size_max", "gauge", "Largest batch formed so far.", self.batch_size_max),
            ("robovla_observations_total", "counter", "Observations answered by the model.", self.observations),
            ("robovla_inference_seconds_total", "counter", "Time the model spent on batches.",
             f"{self.inference_seconds:.6f}"),
            ("robovla_rejected_total", "counter", "Requests refused with 503 because the queue was full.",
             self.rejected_queue_full),
            ("robovla_cancelled_total", "counter", "Observations dropped because their client disconnected.",
             self.cancelled),
            ("robovla_queue_depth", "gauge", "Observations waiting for the model.", self.queue_depth),
            ("robovla_queue_capacity", "gauge", "Most observations that may wait.", self.queue_capacity),
        ):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"
