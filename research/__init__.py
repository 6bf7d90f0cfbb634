"""The papers' methods, one package each, plus shared data formats in `research.datasets`."""
