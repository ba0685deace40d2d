"""Reports: records -> pandas, tables, fits, plots. Reads records only; never imports models."""
