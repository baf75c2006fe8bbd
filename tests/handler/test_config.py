import pytest

from handler.config import ConfigError, HandlerConfig


def test_defaults_are_safe():
    cfg = HandlerConfig.from_dict(None)
    assert cfg.policy == "log" and cfg.expose_scores is False and cfg.torch_threads == 1


@pytest.mark.parametrize("section,match", [
    ({"polcy": "reject"}, "unknown key"),
    ({"policy": "block"}, "policy must be one of"),
    ({"topk": 0}, "topk must be a positive integer"),
    ({"topk": True}, "topk must be a positive integer"),
    ({"expose_scores": "yes"}, "expose_scores must be true or false"),
    ({"threshold": "high"}, "threshold must be a number"),
    ({"input_std": [0.0]}, "positive"),
    ({"input_mean": [0.5, 0.5], "input_std": [0.5]}, "same length"),
    ({"device": "tpu"}, "device must be one of"),
])
def test_bad_settings_name_the_key(section, match):
    with pytest.raises(ConfigError, match=match):
        HandlerConfig.from_dict(section)


def test_roundtrip():
    cfg = HandlerConfig.from_dict({"policy": "reject", "topk": 3, "threshold": 1.5})
    assert HandlerConfig.from_dict(cfg.to_dict()) == cfg
