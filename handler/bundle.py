"""Load everything the handler needs from an unpacked .mar (TorchServe's model_dir)."""
import json
import logging
import os
from typing import Dict, List, Tuple

from handler.checkpoints import load_classifier, load_mae, read_classifier_meta
from handler.config import HandlerConfig
from handler.scorer import Calibration, SameScorer

logger = logging.getLogger(__name__)


def load_class_names(model_dir: str, num_classes: int) -> List[str]:
    path = os.path.join(model_dir, "index_to_name.json")
    if not os.path.isfile(path):
        return [str(i) for i in range(num_classes)]
    with open(path, encoding="utf-8") as fh:
        mapping: Dict[str, str] = json.load(fh)
    return [str(mapping.get(str(i), i)) for i in range(num_classes)]


def load_scorer(model_dir: str, victim_file: str, config: HandlerConfig) -> Tuple[SameScorer, Dict]:
    """(scorer, victim metadata) from the victim, MAE, shadow and calibration files in model_dir."""
    victim_path = os.path.join(model_dir, victim_file)
    meta = read_classifier_meta(victim_path)
    victim = load_classifier(victim_path, model_dir)
    shadow = load_classifier(os.path.join(model_dir, config.shadow_file), model_dir)
    mae = load_mae(os.path.join(model_dir, config.mae_file))
    with open(os.path.join(model_dir, config.calibration_file), encoding="utf-8") as fh:
        calibration = Calibration(**json.load(fh))
    if mae.config.in_chans != meta["in_chans"] or mae.config.img_size != meta["img_size"]:
        raise ValueError(f"MAE input {mae.config.in_chans}x{mae.config.img_size} does not match the victim's "
                         f"{meta['in_chans']}x{meta['img_size']}")
    if len(config.input_mean) not in (1, meta["in_chans"]):
        raise ValueError(f"handler.input_mean has {len(config.input_mean)} values for a {meta['in_chans']}-channel model")
    scorer = SameScorer(victim, mae, shadow, calibration, config.input_mean, config.input_std)
    return scorer, meta
