"""diffbench's harness: settings, suites, cases and their subjects, the runner, launchers and the API's jobs."""

from diffbench.core.guard import only_as_diffbench

only_as_diffbench(__name__, "bench")
