"""The shared training library every paper builds on.

train_state (TrainState), parallel (data mesh, data-parallel step), loop (train_loop),
checkpoint (orbax with auto-resume), metrics (JSON lines + TensorBoard), progress (tqdm),
prefetch (background batches), results (results.json / results.md / plots).
"""
