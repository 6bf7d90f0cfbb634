"""What users launch: binaries, configs, shared experiment machinery and benchmarks."""
