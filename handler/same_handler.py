"""TorchServe entry point: the victim's prediction plus a SAME score for every query.

Keep this file thin: TorchServe requires a handler module to define exactly one class, and all
logic lives in the other handler/ modules (which the .mar carries as the `handler` package).
"""
import logging
import time
from typing import Any, List

import torch
from ts.torch_handler.base_handler import BaseHandler

from handler.audit import AuditLog
from handler.batch import RequestBatch, RequestItem
from handler.bundle import load_class_names, load_scorer
from handler.config import HandlerConfig
from handler.decoding import InputError, InputSpec, client_id_of, decode_item
from handler.policy import decide
from handler.scorer import ScoreBatch
from handler.telemetry import Telemetry

logger = logging.getLogger(__name__)


class SameDefenseHandler(BaseHandler):
    def initialize(self, context):
        self.context = context
        self.config = HandlerConfig.from_dict((context.model_yaml_config or {}).get("handler"))
        torch.set_num_threads(self.config.torch_threads)
        props = context.system_properties
        self.device = self._pick_device(props.get("gpu_id"))
        model_dir = props.get("model_dir")
        self.scorer, meta = load_scorer(model_dir, context.manifest["model"]["serializedFile"], self.config)
        self.scorer.to(self.device)
        self.class_names = load_class_names(model_dir, meta["num_classes"])
        self.spec = InputSpec(meta["in_chans"], meta["img_size"], self.config.max_request_bytes)
        calibration = self.scorer.calibration
        self.threshold = calibration.threshold if self.config.threshold is None else float(self.config.threshold)
        self.audit = AuditLog(self.config.audit_log)
        self.telemetry = Telemetry(context.metrics, context.model_name)
        self.initialized = True
        logger.info("SAME handler ready: device=%s policy=%s alpha=%.3f threshold=%.4f input=%s",
                    self.device, self.config.policy, calibration.alpha, self.threshold, self.spec.shape)

    def _pick_device(self, gpu_id) -> torch.device:
        wants_cuda = self.config.device == "cuda" or (self.config.device == "auto" and gpu_id is not None)
        if wants_cuda and torch.cuda.is_available():
            return torch.device(f"cuda:{gpu_id or 0}")
        return torch.device("cpu")

    def preprocess(self, data: List[Any]) -> RequestBatch:
        items = []
        for idx, row in enumerate(data):
            headers = self.context.get_all_request_header(idx) if self.context else {}
            item = RequestItem(request_id=str(self.context.get_request_id(idx)) if self.context else str(idx),
                         client_id=client_id_of(row, headers, self.config.client_id_header, self.config.client_id_key))
            try:
                item.image = decode_item(row, self.spec)
            except InputError as err:
                item.error = err
            items.append(item)
        return RequestBatch(items)

    def inference(self, batch: RequestBatch, *args, **kwargs) -> RequestBatch:
        images = [it.image for it in batch.items if it.error is None]
        if images:
            x = torch.stack(images).to(self.device)
            use_amp = self.config.amp and self.device.type == "cuda"
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=use_amp):
                scores = self.scorer(x)
            batch.scores = ScoreBatch(**{k: v.float().cpu() for k, v in vars(scores).items()})
        return batch

    def postprocess(self, batch: RequestBatch) -> List[Any]:
        responses, row = [], 0
        for idx, item in enumerate(batch.items):
            record = {"time": time.time(), "request_id": item.request_id, "client_id": item.client_id,
                      "model": self.context.model_name if self.context else None}
            if item.error is not None:
                self._set_status(idx, item.error.status, str(item.error))
                responses.append({"code": item.error.status, "type": "InputError", "message": str(item.error)})
                record.update(decision="input_error", status=item.error.status, error=str(item.error))
            else:
                s = batch.scores
                score, rec, dev = float(s.score[row]), float(s.rec[row]), float(s.dev[row])
                probs = torch.softmax(s.logits[row], dim=0)
                row += 1
                decision = decide(score, self.threshold, self.config.policy)
                if decision.status != 200:
                    self._set_status(idx, decision.status, decision.message)
                    responses.append({"code": decision.status, "type": "QueryRefused", "message": decision.message})
                else:
                    responses.append(self._prediction(probs, score, rec, dev, decision.flagged))
                record.update(decision=decision.action, flagged=decision.flagged, status=decision.status,
                              score=score, rec=rec, dev=dev, prediction=int(probs.argmax()))
            self.audit.write(record)
            self.telemetry.record(record)
        self.telemetry.batch_done(time.time() - batch.started)
        return responses

    def _prediction(self, probs: torch.Tensor, score: float, rec: float, dev: float, flagged: bool) -> dict:
        top = torch.topk(probs, min(self.config.topk, probs.numel()))
        out = {self.class_names[int(i)]: float(p) for p, i in zip(top.values, top.indices)}
        if self.config.expose_scores:
            out["same"] = {"score": score, "rec": rec, "dev": dev, "flagged": flagged, "threshold": self.threshold}
        return out

    def get_insights(self, batch: RequestBatch, raw_inputs, target=0):
        """/explanations: Integrated Gradients of the victim's logit `target` for each valid item."""
        from handler.explain import integrated_gradients

        out = []
        for item in batch.items:
            if item.error is not None:
                out.append({"code": item.error.status, "type": "InputError", "message": str(item.error)})
                continue
            x = item.image.unsqueeze(0).to(self.device)
            out.append(integrated_gradients(self.scorer.victim_logits, x, int(target or 0))[0].cpu().tolist())
        return out

    def _set_status(self, idx: int, code: int, message: str) -> None:
        if self.context is not None:
            self.context.set_response_status(code, message, idx)
