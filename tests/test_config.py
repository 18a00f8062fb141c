from __future__ import annotations

import pytest

from gauntlet_jax.config import load_config, with_overrides
from gauntlet_jax.errors import ConfigError


@pytest.mark.parametrize("name", ["tiny", "local", "150m", "1b2"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(name)
    assert cfg.name == name


def test_dotted_override_applies_and_widens_int_to_float() -> None:
    cfg = load_config("tiny", ["model.n_layers=3", "protocol.learning_rate=1"])
    assert cfg.model.n_layers == 3
    assert cfg.protocol.learning_rate == 1.0 and isinstance(cfg.protocol.learning_rate, float)


def test_unknown_key_names_the_key_and_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"model\.n_layer\b.*valid keys.*n_layers"):
        load_config("tiny", ["model.n_layer=3"])


def test_a_renamed_key_names_its_new_name() -> None:
    with pytest.raises(ConfigError, match=r"screen_random_share was renamed.*screen_stalest_share"):
        load_config("tiny", ["validator.screen_random_share=0.25"])


def test_unknown_section_is_an_error() -> None:
    with pytest.raises(ConfigError, match="modle"):
        load_config(None, ["modle.n_layers=3"])


def test_mistyped_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.n_layers: expected int"):
        load_config("tiny", ["model.n_layers=three"])


def test_missing_file_is_an_error() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config("no-such-config")


def test_with_overrides_keeps_other_values() -> None:
    cfg = with_overrides(load_config("tiny"), ["validator.power=3"])
    assert cfg.validator.power == 3.0
    assert cfg.model.d_model == load_config("tiny").model.d_model


def test_scientific_notation_without_a_dot_is_a_float() -> None:
    assert load_config("tiny", ["protocol.learning_rate=3e-3"]).protocol.learning_rate == 0.003
    with pytest.raises(ConfigError, match="expected float"):
        load_config("tiny", ["protocol.learning_rate=fast"])


def test_yaml_on_and_off_stay_words_in_text_fields() -> None:
    # YAML 1.1 reads a bare on/off as a boolean; mesh.distributed is the word.
    assert load_config("tiny", ["mesh.distributed=on"]).mesh.distributed == "on"
    assert load_config("tiny", ["mesh.distributed=off"]).mesh.distributed == "off"
    with pytest.raises(ConfigError, match=r"model\.n_layers: expected int"):
        load_config("tiny", ["model.n_layers=on"])
