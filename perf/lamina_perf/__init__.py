"""perf/run's harness: profiles, trees, contenders, jobs, the runner and the report."""
