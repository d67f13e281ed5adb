"""Studies built on the library: the paper's comparison (reproduce), the task-embedding analysis, the benchmark."""
