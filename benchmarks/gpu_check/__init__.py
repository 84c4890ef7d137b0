"""GPU readiness check (issue 17): ``python -m benchmarks.gpu_check`` on one CUDA GPU, ``--smoke`` on the CPU.

Sections: train_speed.py (Lightning vs bare loop throughput), ddp_resume.py (strategy=ddp through the training
CLI, exact resume), sampling.py (samples/s, per-seed noise cost, batch-size invariance), report.py (tables),
settings.py (the sizes of both modes).
"""
