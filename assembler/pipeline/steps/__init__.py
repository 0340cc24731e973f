"""Where a compile step runs: the step as a value and what runs one (``jobs``), the local
executor (``executors``), the Slurm one (``slurm``), and the scheduler that runs
independent steps side by side (``scheduler``)."""
