"""Reports: records -> pandas, tables, fits, plots. Reads records only; never imports models."""

from diffbench.core.guard import only_as_diffbench

only_as_diffbench(__name__, "reports")
