"""The sequence likelihood evaluator: numbers equal a direct computation, in one process and across workers."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model

from pix2seq_d2 import Pix2SeqDatasetMapper, Pix2SeqTokenizer
from pix2seq_d2.engine.distributed import leave_process_group
from pix2seq_d2.evaluation.sequence_likelihood import SequenceLikelihoodEvaluator
from pix2seq_d2.tasks import build_task
from tests.helpers import detection_task, tiny_cfg


def direct_likelihood(model, mapper, dataset_dicts, tokenizer) -> dict:
    """NLL per token kind and class accuracy computed by hand, image by image."""
    nll = {"coord": [], "class": [], "eos": []}
    class_hits = []
    for d in dataset_dicts:
        x = mapper(d)
        memory, pos, padding = model.encode(model.preprocess_image([x]))
        logits = model.decoder(x["seq_input"][None], memory, pos, padding)[0]  # [T, V]
        logprobs = torch.log_softmax(logits.double(), -1)
        for t, target in enumerate(x["seq_target"].tolist()):
            lp = -logprobs[t, target].item()
            if target >= tokenizer.coord_token_range()[0]:
                nll["coord"].append(lp)
            elif target == tokenizer.EOS:
                nll["eos"].append(lp)
            elif target >= tokenizer.NOISE:
                nll["class"].append(lp)
                class_hits.append(int(logprobs[t].argmax()) == target)
    everything = nll["coord"] + nll["class"] + nll["eos"]
    out = {f"nll_{k}": sum(v) / len(v) for k, v in nll.items()}
    out["nll"] = sum(everything) / len(everything)
    out["class_accuracy"] = 100.0 * sum(class_hits) / len(class_hits)
    return out


@torch.no_grad()
def test_evaluator_numbers_match_a_direct_computation(two_images):
    name, dicts = two_images
    cfg = tiny_cfg("MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 3)
    model = build_model(cfg).eval()
    tokenizer = Pix2SeqTokenizer.from_config(cfg)
    mapper = Pix2SeqDatasetMapper(cfg, is_train=False, use_annotations=True)
    evaluator = SequenceLikelihoodEvaluator(detection_task(tokenizer))
    loader = build_detection_test_loader(cfg, name, mapper=mapper)
    results = inference_on_dataset(model, loader, evaluator)["seq_likelihood"]

    expected = direct_likelihood(model, mapper, dicts, tokenizer)
    assert results["images"] == 2
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, rel=1e-5), key
    assert results["perplexity_coord"] == pytest.approx(math.exp(expected["nll_coord"]), rel=1e-5)
    # An untrained model is near-uniform over the vocabulary: perplexity of the order of its size.
    assert 0.3 * tokenizer.vocab_size < results["perplexity"] < 10 * tokenizer.vocab_size


def test_images_without_sequences_are_left_out_with_a_warning(two_images, caplog):
    name, _ = two_images
    cfg = tiny_cfg("MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 2)
    model = build_model(cfg).eval()
    evaluator = SequenceLikelihoodEvaluator(build_task(cfg))
    loader = build_detection_test_loader(cfg, name, mapper=Pix2SeqDatasetMapper(cfg, is_train=False))
    with caplog.at_level("WARNING"):
        assert inference_on_dataset(model, loader, evaluator) == {}
    assert "2 images had no ground-truth sequence" in caplog.text


def fake_outputs(seed: int, tokenizer: Pix2SeqTokenizer, images: int) -> list[dict]:
    """Per-image likelihood stats of random sequences (what Pix2Seq.inference attaches)."""
    gen = torch.Generator().manual_seed(seed)
    outputs = []
    for _ in range(images):
        objects = int(torch.randint(0, 4, (), generator=gen))
        coords = torch.randint(tokenizer.coord_token_range()[0], tokenizer.vocab_size, (objects, 4), generator=gen)
        classes = torch.randint(
            tokenizer.class_token_range()[0], tokenizer.coord_token_range()[0], (objects, 1), generator=gen
        )
        target = torch.cat([torch.cat([coords, classes], 1).flatten(), torch.tensor([tokenizer.EOS])])
        argmax = torch.where(torch.rand(len(target), generator=gen) < 0.5, target, torch.zeros_like(target))
        logprob = -torch.rand(len(target), generator=gen) * 5
        outputs.append({"sequence_likelihood": {"target": target, "logprob": logprob, "argmax": argmax}})
    return outputs


def _evaluate_shard(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    tokenizer = Pix2SeqTokenizer(num_classes=3, num_bins=10)
    evaluator = SequenceLikelihoodEvaluator(detection_task(tokenizer))
    evaluator.process([], fake_outputs(seed=rank, tokenizer=tokenizer, images=5 + 7 * rank))  # unequal shards
    torch.save(evaluator.evaluate(), os.path.join(out_dir, f"result{rank}.pt"))
    leave_process_group()  # barrier, drop detectron2's cached group handle, destroy


@pytest.mark.skipif(sys.platform != "linux", reason="GLOO file:// init as used here is tested on Linux")
def test_two_workers_give_the_result_of_one_process_over_all_images(tmp_path):
    torch.multiprocessing.spawn(_evaluate_shard, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    main, other = torch.load(tmp_path / "result0.pt"), torch.load(tmp_path / "result1.pt")
    assert other == {}  # only the main process reports

    tokenizer = Pix2SeqTokenizer(num_classes=3, num_bins=10)
    single = SequenceLikelihoodEvaluator(detection_task(tokenizer), distributed=False)
    single.process([], fake_outputs(seed=0, tokenizer=tokenizer, images=5))
    single.process([], fake_outputs(seed=1, tokenizer=tokenizer, images=12))
    expected = single.evaluate()["seq_likelihood"]
    assert main["seq_likelihood"].keys() == expected.keys()
    for key, value in expected.items():
        assert main["seq_likelihood"][key] == pytest.approx(value, rel=1e-12), key
    assert expected["images"] == 17
