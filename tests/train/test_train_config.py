"""Training configs: YAML <-> dataclasses, unknown keys, --set overrides, shipped configs, LR schedule."""

import math

import pytest
import torch
import yaml

import algnet
from algnet.errors import AlgnetError
from algnet.train.config import (
    Config, DatasetConfig, apply_overrides, config_from_dict, config_to_dict, dump_config, list_configs, load_config,
)
from algnet.train.sampler import ResumableSampler
from algnet.train.schedule import CosineFactor, cosine_factor

PAPER_CONFIGS = ["gopro-algnet", "gopro-algnet-b", "realblur-j", "realblur-r", "dpdd"]
ABLATIONS = {"gopro-nafnet32": "nafnet32", "gopro-algnet-no-local": "algnet_no_local",
             "gopro-algnet-no-global": "algnet_no_global", "gopro-algnet-sum": "algnet_sum",
             "gopro-algnet-concat": "algnet_concat"}


class TestRoundTrip:
    def test_defaults_are_the_paper_recipe(self):
        c = Config()
        assert (c.optim.lr, c.optim.betas, c.optim.min_lr, c.optim.weight_decay) == (5e-4, (0.9, 0.999), 1e-7, 0.0)
        assert (c.train.batch_size, c.data.train.crop_size, c.data.train.flips) == (32, 256, True)
        assert (c.loss.edge_weight, c.loss.freq_weight, c.loss.eps) == (0.05, 0.1, 1e-3)

    def test_yaml_round_trip(self, tmp_path):
        c = config_from_dict({
            "model": {"name": "algnet", "kwargs": {"width": 8, "enc_blocks": [1, 1, 1, 1]}},
            "data": {"root": "/x", "train": {"kind": "gopro", "crop_size": 128},
                     "val": {"kind": "gopro", "split": "test", "crop_size": None, "max_images": 3}},
            "optim": {"lr": "2e-4", "betas": [0.8, 0.99], "ema": 0.999, "grad_clip": 0.5},
            "train": {"amp": "bf16", "batch_size": 8, "total_steps": 10},
        })
        assert c.optim.lr == 2e-4 and c.optim.betas == (0.8, 0.99)  # "2e-4" is a string in YAML 1.1
        path = tmp_path / "c.yaml"
        path.write_text(dump_config(c))
        again = load_config(str(path))
        assert again == c
        assert yaml.safe_load(path.read_text()) == config_to_dict(c)

    def test_partial_file_keeps_defaults(self, tmp_path):
        path = tmp_path / "p.yaml"
        path.write_text("train: {batch_size: 4}\n")
        c = load_config(str(path))
        assert c.train.batch_size == 4 and c.train.total_steps == Config().train.total_steps
        assert c.data.val == DatasetConfig(split="val", crop_size=None, flips=False)


class TestErrors:
    @pytest.mark.parametrize("data, path", [
        ({"train": {"batchsize": 3}}, "train.batchsize"),
        ({"data": {"train": {"crop": 3}}}, "data.train.crop"),
        ({"optimizer": {}}, "optimizer"),
    ])
    def test_unknown_key_names_its_path(self, data, path):
        with pytest.raises(AlgnetError, match=rf"unknown key '{path}'"):
            config_from_dict(data)

    @pytest.mark.parametrize("data, path", [
        ({"train": {"batch_size": "big"}}, "train.batch_size"),
        ({"train": {"batch_size": 2.5}}, "train.batch_size"),
        ({"train": {"amp": "fp8"}}, "train.amp"),
        ({"optim": {"betas": [0.9]}}, "optim.betas"),
        ({"data": {"train": {"kind": "imagenet"}}}, "data.train.kind"),
        ({"data": {"train": {"flips": "yes"}}}, "data.train.flips"),
        ({"data": {"train": {"kind": "gopro"}}}, "data.train.root"),
        ({"train": {"batch_size": 0}}, "train.batch_size"),
    ])
    def test_bad_value_names_its_path(self, data, path):
        with pytest.raises(AlgnetError, match=path.replace(".", r"\.")):
            config_from_dict(data)

    def test_file_name_in_message(self, tmp_path):
        path = tmp_path / "bad.yaml"
        path.write_text("train: {total_step: 5}\n")
        with pytest.raises(AlgnetError, match=r"bad\.yaml.*train\.total_step"):
            load_config(str(path))

    def test_missing_config(self):
        with pytest.raises(AlgnetError, match="synthetic-tiny"):  # the message lists the shipped ones
            load_config("no-such-config")


class TestOverrides:
    def test_types(self):
        c = load_config("synthetic-tiny", ["train.batch_size=4", "optim.lr=5e-4", "optim.betas=[0.5, 0.9]",
                                           "data.val=null", "model.kwargs.width=12", "train.amp=bf16",
                                           "optim.ema=0.99"])
        assert c.train.batch_size == 4 and isinstance(c.train.batch_size, int)
        assert c.optim.lr == 5e-4 and isinstance(c.optim.lr, float)
        assert c.optim.betas == (0.5, 0.9)
        assert c.data.val is None
        assert c.model.kwargs["width"] == 12 and c.model.kwargs["enc_blocks"] == [1, 1, 1, 1]
        assert c.train.amp == "bf16" and c.optim.ema == 0.99

    def test_type_checked(self):
        with pytest.raises(AlgnetError, match=r"train\.batch_size"):
            load_config("synthetic-tiny", ["train.batch_size=eight"])
        with pytest.raises(AlgnetError, match=r"unknown key 'train\.batchsize'"):
            load_config("synthetic-tiny", ["train.batchsize=8"])
        with pytest.raises(AlgnetError, match="KEY=VALUE"):
            apply_overrides({}, ["train.batch_size"])
        with pytest.raises(AlgnetError, match="not a section"):
            apply_overrides({"train": {"seed": 1}}, ["train.seed.x=1"])

    def test_does_not_mutate_input(self):
        base = {"train": {"seed": 1}}
        apply_overrides(base, ["train.seed=2"])
        assert base == {"train": {"seed": 1}}


class TestShippedConfigs:
    def test_every_experiment_is_shipped(self):
        assert set(PAPER_CONFIGS) | set(ABLATIONS) | {"synthetic-tiny"} <= set(list_configs())

    @pytest.mark.parametrize("name", sorted(set(PAPER_CONFIGS) | set(ABLATIONS) | {"synthetic-tiny"}))
    def test_loads(self, name):
        c = load_config(name)
        assert c.model.name in algnet.list_models()
        if name != "synthetic-tiny":
            assert (c.optim.lr, c.optim.min_lr, c.optim.betas) == (5e-4, 1e-7, (0.9, 0.999))
            assert (c.train.batch_size, c.data.train.crop_size, c.data.train.flips) == (32, 256, True)
            assert c.train.total_steps == 200_000
            assert c.data.val.crop_size is None

    def test_models(self):
        assert load_config("gopro-algnet-b").model.name == "algnet_b"
        for name, model in ABLATIONS.items():
            assert load_config(name).model.name == model
        assert load_config("realblur-j").data.train.kind == "realblur_j"
        assert load_config("dpdd").data.val.split == "val"

    def test_synthetic_tiny_checkpoint_is_small(self):
        c = load_config("synthetic-tiny")
        model = algnet.create_model(c.model.name, **c.model.kwargs)
        assert sum(p.numel() * 4 for p in model.parameters()) <= 15e6


class TestAugmentationSettings:
    def test_synthetic_dataset_receives_them(self):
        from algnet.train.trainer import build_dataset

        c = load_config("synthetic-tiny", ["data.train.scale_range=[0.25, 0.75]", "data.train.rot90=false"])
        data = build_dataset(c.data.train, seed=0)
        assert data.scale_range == (0.25, 0.75) and data.rot90 is False and data.shuffle_channels is True

    @pytest.mark.parametrize("key,value", [("scale_range", "[0.5, 1.0]"), ("rot90", "true"), ("shuffle_channels", "true"),
                                           ("dead_leaves", "0.5")])
    def test_paired_datasets_refuse_them(self, tmp_path, key, value):
        from algnet.train.trainer import build_dataset

        c = load_config("synthetic-tiny", [f"data.train={{kind: folders, root: {tmp_path}, crop_size: 32}}",
                                           f"data.train.{key}={value}"])
        with pytest.raises(AlgnetError, match=f"{key}: only synthetic datasets"):
            build_dataset(c.data.train, seed=0)


class TestSchedule:
    def test_closed_form(self):
        lr, lo, total = 5e-4, 1e-7, 1000
        assert cosine_factor(0, lr, lo, total) * lr == pytest.approx(lr)
        assert cosine_factor(total, lr, lo, total) * lr == pytest.approx(lo)
        assert cosine_factor(500, lr, lo, total) * lr == pytest.approx((lr + lo) / 2)
        assert cosine_factor(250, lr, lo, total) * lr == pytest.approx(lo + (lr - lo) * (1 + math.cos(math.pi / 4)) / 2)
        assert cosine_factor(5000, lr, lo, total) == cosine_factor(total, lr, lo, total)  # flat after the end

    def test_scheduler_follows_it(self):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.Adam([p], lr=1e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, CosineFactor(1e-3, 1e-6, 10))
        lrs = []
        for _ in range(10):
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        expected = [1e-6 + (1e-3 - 1e-6) * (1 + math.cos(math.pi * s / 10)) / 2 for s in range(1, 11)]
        assert lrs == pytest.approx(expected, rel=1e-12)
        assert isinstance(sched.state_dict()["lr_lambdas"][0], dict)  # plain data in last.pt


class TestSampler:
    def test_ranks_split_the_single_process_batches(self):
        data = list(range(23))
        one = ResumableSampler(data, world_size=1, rank=0, seed=3, per_rank_batch=4)
        two = [ResumableSampler(data, world_size=2, rank=r, seed=3, per_rank_batch=2) for r in range(2)]
        for epoch in (0, 1):
            for s in [one, *two]:
                s.set_epoch(epoch)
            single = list(one)
            assert sorted(single) == sorted(set(single)) and len(single) == 23
            per_rank = [list(s) for s in two]
            for b in range(one.batches_per_epoch()):  # 5 full batches of 4
                union = per_rank[0][2 * b: 2 * b + 2] + per_rank[1][2 * b: 2 * b + 2]
                assert sorted(union) == sorted(single[4 * b: 4 * b + 4])
        assert one.batches_per_epoch() == two[0].batches_per_epoch() == 5

    def test_order_depends_on_seed_and_epoch_only(self):
        a = ResumableSampler(list(range(50)), 1, 0, seed=1, per_rank_batch=5)
        b = ResumableSampler(list(range(50)), 1, 0, seed=1, per_rank_batch=5)
        a.set_epoch(2)
        b.set_epoch(2)
        assert list(a) == list(b)
        b.set_epoch(3)
        assert list(a) != list(b)

    def test_resume_inside_an_epoch(self):
        s = ResumableSampler(list(range(40)), 1, 0, seed=0, per_rank_batch=4)
        s.set_epoch(1)
        full = list(s)
        s.set_epoch(1, start_batch=3)
        assert list(s) == full[12:] and len(s) == 28
