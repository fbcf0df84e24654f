"""The `paper` preset (ResNet-50, 224 px, 4096-wide heads, K=8) runs a full training step on CPU.

Marked slow (about 2-4 minutes on 2 cores: two 54M-parameter networks are built and traced); run with
`python -m pytest --runslow tests/test_paper_step.py`.
"""

import numpy as np
import pytest


@pytest.mark.slow
def test_paper_preset_train_step_at_batch_2():
    import fra_keras

    model = fra_keras.FRA.from_preset("paper", batch_size=2, steps_per_epoch=10)
    assert model.config.image_size == 224 and model.config.feature_grid == 7
    trainable = sum(int(np.prod(v.shape)) for v in model.optimized_variables)
    assert trainable == 58_098_240                   # docs/method.md, "Neck and heatmaps"
    model.compile()
    rng = np.random.default_rng(0)
    batch = {"view1": rng.standard_normal((2, 224, 224, 3), dtype=np.float32),
             "view2": rng.standard_normal((2, 224, 224, 3), dtype=np.float32)}
    before = [v.numpy().copy() for v in model.target_variables[:3]]
    logs = model.train_on_batch(batch, return_dict=True)
    assert set(logs) >= {"loss", "loss_global", "loss_region", "loss_cluster", "z_std", "region_entropy"}
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert int(model.optimizer.iterations.numpy()) == 1
    # The target moved by EMA (momentum 0.996 at step 0), so it differs from its initial copy.
    after = [v.numpy() for v in model.target_variables[:3]]
    assert any(not np.allclose(a, b) for a, b in zip(after, before))
    assert model.heatmaps(batch["view1"]).shape == (2, 7, 7, 8)
