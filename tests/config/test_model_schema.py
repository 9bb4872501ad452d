"""The model section accepts YAML's bare on/off for chat_template."""

import pytest

from mmalign.config import load_config
from mmalign.config.schemas.sft import SFTConfig


@pytest.mark.parametrize("value,expected", [("off", "off"), ("on", "on"), ("'off'", "off"), ("auto", "auto")])
def test_bare_on_off_chat_template(tmp_path, value, expected):
    path = tmp_path / "c.yaml"
    path.write_text(f"recipe: sft\nmodel:\n  path: x\n  chat_template: {value}\ndata:\n  path: bundled:text/sft_train\n")
    assert load_config(path, SFTConfig).model.chat_template == expected
