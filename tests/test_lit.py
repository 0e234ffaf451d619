"""The Lightning module's pure parts: the learning-rate schedule and when the loss is checked."""

from pipeline.config.schema import TrainParams
from pipeline.training.module import is_report_step


def test_the_finite_loss_check_waits_for_the_device_only_where_something_is_written():
    t = TrainParams(max_steps=100, log_every=10, checkpoint_every=25, val_check_interval=50)
    checked = [step for step in range(100) if is_report_step(step, t)]
    # Lightning logs after steps 9, 19, ... (the count then a multiple of 10); saves, validations after 25, 50, ...
    assert checked == sorted({*range(9, 100, 10), 24, 49, 74, 99})
