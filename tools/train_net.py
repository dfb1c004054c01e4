#!/usr/bin/env python
"""Train or evaluate Pix2Seq with detectron2's launcher (any number of GPUs, machines, or CPU workers).

python tools/train_net.py --config-file configs/pix2seq_R50.yaml --num-gpus 8
python tools/train_net.py --config-file configs/pix2seq_R50.yaml --eval-only MODEL.WEIGHTS model.pth
"""

from __future__ import annotations

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from pix2seq_d2 import Pix2SeqTrainer, add_pix2seq_config
from pix2seq_d2.trainer import share_cpu_threads_among_workers


def setup(args) -> CfgNode:
    cfg = get_cfg()
    add_pix2seq_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    share_cpu_threads_among_workers()
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Pix2SeqTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Pix2SeqTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Pix2SeqTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
