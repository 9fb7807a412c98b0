"""BatchNorm folded into the convolutions: the same outputs as the unfolded model on the R50
PaddleVideo fixture, in process and through the jax.export artifact."""

import jax
import numpy as np
import pytest

from ppsn.convert.paddle import load_pdparams, to_flax
from ppsn.data.transforms import normalize
from ppsn.export import export_model
from ppsn.models import TSN, fold
from ppsn.recipe import pptsn_config
from ppsn.serve.predictor import Predictor


@pytest.fixture(scope="module")
def variables(decompressed):
    return jax.tree.map(np.asarray, to_flax(load_pdparams(decompressed["model"]), depth=50))


def test_folded_r50_gives_the_unfolded_logits(variables, pptsn_fixture_dir):
    x = np.load(pptsn_fixture_dir / "caseA_input.npy").transpose(0, 1, 3, 4, 2)  # NTHWC
    folded = fold.fold_variables(variables)
    assert "batch_stats" not in folded
    assert set(folded["params"]["backbone"]["conv1_1"]) == {"conv", "bias"}
    want = np.asarray(TSN(50, 400).apply(variables, x))
    got = np.asarray(TSN(50, 400, fold_bn=True).apply(folded, x))
    assert np.abs(got - want).max() <= 1e-4, np.abs(got - want).max()
    with pytest.raises(ValueError, match="inference only"):
        TSN(50, 400, fold_bn=True).apply(folded, x[:, :1], train=True)


def test_exported_folded_r50_scores_match_the_unfolded_model(variables, tmp_path):
    config = pptsn_config()
    config.data.test_num_seg, config.data.short_size, config.data.target_size = 1, 128, 112
    meta = export_model(config, variables, str(tmp_path / "inference"), platforms=("cpu",))
    assert meta["fold_bn"]
    frames = np.random.default_rng(0).integers(0, 256, (2, 10, 112, 112, 3), dtype=np.uint8)
    got = Predictor(str(tmp_path / "inference")).scores(frames)
    want = jax.nn.softmax(TSN(50, 400).apply(variables, normalize(frames)), -1)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)
    with np.load(tmp_path / "inference" / "weights.npz") as weights:
        # each conv-BN unit: a kernel and a bias, no scale / mean / variance
        units = len(jax.tree.leaves(variables["params"]["backbone"])) // 3
        assert len(weights.files) == 2 * units + 2
