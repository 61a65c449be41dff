"""Every chapter preset (conf/experiment/*.yaml) composes, validates, and carries the catalogue metadata
scripts/reproduce.py reads; the RL catalogue of shared/experiments has a preset for each id."""
import importlib.util
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from scripts import reproduce, train

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
CATALOGUE = ROOT.parent / "shared" / "experiments" / "README.md"
ALL_KINDS = {kind for kinds in reproduce.KINDS.values() for kind in kinds}
META = reproduce.load_presets()


@pytest.fixture(scope="module")
def composer():
    train.register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(train.CONF_DIR)):
        yield lambda preset: compose(config_name="config", overrides=[f"experiment={preset}"],
                                     return_hydra_config=True)
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_validates(composer, preset):
    cfg = composer(preset)
    choices = cfg.hydra.runtime.choices
    kind, _, module = train.select_algorithm({group: choices.get(group) for group in train.GROUPS})
    meta = META[preset]
    if any(importlib.util.find_spec(m) is None for m in meta["requires"]):
        pytest.skip(f"needs {meta['requires']}")  # e.g. an Atari id is unknown to gymnasium without ale-py
    train.validate(cfg, kind)
    assert module.Config is not None
    for key in meta["budget_keys"]:
        value = OmegaConf.select(cfg, key)
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0, key


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_meta(preset):
    path = ROOT / "conf" / "experiment" / f"{preset}.yaml"
    text = path.read_text()
    assert text.startswith("# @package _global_\n"), f"{path.name} must start with '# @package _global_'"
    meta = META[preset]
    assert meta["id"] == preset
    missing = [key for key in reproduce.REQUIRED_META if key not in (OmegaConf.load(path).get("meta") or {})]
    assert not missing, f"{path.name}: meta lacks {missing}"
    assert meta["kind"] in ALL_KINDS and meta["compare"] in reproduce.COMPARES
    if meta["compare"] != "none":
        assert meta["reported_value"] is not None and meta["metric"], f"{path.name}: compare needs a value and metric"
    key, indices, summary = reproduce.parse_metric(meta["metric"])
    assert key and all(isinstance(i, int) for i in indices)
    assert summary is None or re.fullmatch(r"max|min|mean|last\d*", summary)
    comment = text.split("\n\n", 1)[0]
    assert preset in comment, f"{path.name}: the header comment names the id"


def test_every_rl_experiment_of_the_catalogue_has_a_preset():
    """The RL rows of the catalogue's master table (kinds rl, rl-tab, rl-fix) each have a preset."""
    if not CATALOGUE.is_file():
        pytest.skip(f"{CATALOGUE} not found")
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| [^|]+ \| (rl(?:-tab|-fix)?) \|", CATALOGUE.read_text(), re.MULTILINE)
    assert len(rows) == 34
    missing = sorted(i for i, _ in rows if i not in PRESETS)
    assert not missing, f"no preset for {missing}"
    assert all(META[i]["kind"] == kind for i, kind in rows)
