"""The paper's learning-rate schedule (SOLVER.LR_SCHEDULER_NAME "WarmupLinearDecayLR"): a linear warmup
from 0.1% of the learning rate, then a linear decay to END_LR_FACTOR (1%) of it at the last iteration.

It is a multiplier of ``optimizer.lr`` over the run, as in detectron2's LazyConfigs; the warmup is
given in iterations and follows ``train.max_iter`` when that is overridden.
"""

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import LinearParamScheduler

from pix2seq_d2.solver.build import warmup_fraction

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(LinearParamScheduler)(start_value=1.0, end_value=0.01),  # end_value: SOLVER.END_LR_FACTOR
    warmup_length=L(warmup_fraction)(warmup_iters=1000, max_iter="${train.max_iter}"),  # SOLVER.WARMUP_ITERS
    warmup_factor=0.001,  # SOLVER.WARMUP_FACTOR
    warmup_method="linear",
    rescale_interval=False,
)
