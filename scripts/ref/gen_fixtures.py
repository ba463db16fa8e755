#!/usr/bin/env python3
"""Generate the RepVGG reference fixtures in tests/fixtures/ from timm.

Deterministic: fixed seeds, single thread. Every weight file is produced by pure elementwise RNG +
arithmetic, so it regenerates bit-exactly; float64 reference activations may differ in the last ulp
across CPUs / torch builds (they are compared with tolerances anyway).

Usage:
    python scripts/ref/gen_fixtures.py [--out tests/fixtures] [--official-repo /path/to/DingXiaoH/RepVGG]

With --official-repo (a checkout of https://github.com/DingXiaoH/RepVGG, containing repvgg.py and
se_block.py) the official-naming files are additionally loaded into the official RepVGG class
(strict=True) and checked to reproduce the timm reference outputs, and the official
switch_to_deploy() is checked against our float64 fusion.
"""
import argparse
import copy
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import timm
from timm.models.byobnet import ByobNet, ByoModelCfg, RepVggBlock, _rep_vgg_bcfg
from timm.layers import ConvNormAct

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BN_EPS, rel, sha256, state_dict_clean, to_official, versions, write_json  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

SE_KWARGS = dict(rd_ratio=0.0625, rd_divisor=1)  # exactly timm's repvgg_d2se attn_kwargs

# Each fixture: a narrow timm ByobNet RepVGG built like timm's repvgg_* configs
# (ByoModelCfg(blocks=_rep_vgg_bcfg(d, wf, groups), stem_type='rep', stem_chs=...)).
FIXTURES = [
    dict(name="a_narrow", seed=101,
         desc="A-like plain RepVGG, no groups, no SE",
         depths=(2, 2, 2, 1), wf=(0.125, 0.125, 0.0625, 0.0625), stem_chs=8, groups=0, se=False,
         num_classes=10, in_chans=3, input_hw=(32, 32), official=True, half_variants=True),
    dict(name="g4_narrow", seed=202,
         desc="timm groups=4 (like repvgg_b1g4); depths chosen so timm's per-stage rule == official layers 2,4,6,8",
         depths=(2, 4, 2, 1), wf=(0.125, 0.125, 0.0625, 0.0625), stem_chs=8, groups=4, se=False,
         num_classes=10, in_chans=3, input_hw=(32, 32), official=True),
    dict(name="d2se_narrow", seed=303,
         desc="like repvgg_d2se (attn_layer='se', rd_ratio=1/16, rd_divisor=1; SE also in stem), narrow",
         depths=(2, 2, 2, 1), wf=(0.25, 0.125, 0.125, 0.0625), stem_chs=16, groups=0, se=True,
         num_classes=10, in_chans=3, input_hw=(32, 32), official=True),
    dict(name="tiny_nonsquare", seed=404,
         desc="tiny, non-square 48x40 input (odd intermediate sizes 5,3), stem_chs=12 (not a multiple of 8)",
         depths=(1, 2, 1, 1), wf=(0.125, 0.125, 0.125, 0.0625), stem_chs=12, groups=0, se=False,
         num_classes=7, in_chans=3, input_hw=(48, 40), official=False),
    dict(name="g4_odd", seed=505,
         desc="timm groups=4 with odd stage depths: timm groups blocks with odd in-stage index, which here "
              "DIFFERS from the official global layers 2,4,6 rule",
         depths=(1, 3, 2, 1), wf=(0.125, 0.125, 0.0625, 0.0625), stem_chs=8, groups=4, se=False,
         num_classes=10, in_chans=3, input_hw=(32, 32), official=False),
]
BATCH = 2


def build(fx):
    kw = dict(attn_layer="se", attn_kwargs=dict(SE_KWARGS)) if fx["se"] else {}
    cfg = ByoModelCfg(
        blocks=_rep_vgg_bcfg(d=fx["depths"], wf=fx["wf"], groups=fx["groups"]),
        stem_type="rep",
        stem_chs=fx["stem_chs"],
        **kw,
    )
    m = ByobNet(cfg, num_classes=fx["num_classes"], in_chans=fx["in_chans"])
    return m.eval()


def blocks_of(m):
    out = [("stem", m.stem)]
    for i, st in enumerate(m.stages):
        for j, b in enumerate(st):
            out.append((f"stages.{i}.{j}", b))
    return out


def signed_uniform(gen, n, lo, hi):
    mag = torch.rand(n, generator=gen, dtype=torch.float64) * (hi - lo) + lo
    sign = torch.where(torch.rand(n, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
    return (mag * sign).to(torch.float64)


def randomize_bn(bn, gen):
    n = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(signed_uniform(gen, n, 0.5, 2.0))          # gamma in +-[0.5, 2]
        bn.bias.copy_(signed_uniform(gen, n, 0.1, 1.0))            # beta in +-[0.1, 1]
        bn.running_mean.copy_(signed_uniform(gen, n, 0.2, 1.5))    # mean in +-[0.2, 1.5]
        bn.running_var.copy_(torch.rand(n, generator=gen, dtype=torch.float64) * 2.7 + 0.3)  # var in [0.3, 3]
    assert bn.eps == BN_EPS


def round3(v):
    return float(f"{v:.3g}")


@torch.no_grad()
def randomize(m, x64, gen):
    """Randomise every parameter/buffer of a float64 model, block by block, rescaling each conv by a
    (3-significant-digit) scalar so its pre-BN output on the fixture input has unit std. Keeps all
    activations O(1) without tying BN statistics to the data."""
    y = x64
    for _, blk in blocks_of(m):
        assert isinstance(blk, RepVggBlock) and blk.reparam_conv is None
        for br in (blk.conv_kxk, blk.conv_1x1):
            assert isinstance(br, ConvNormAct)
            w = br.conv.weight
            fan_in = w.shape[1] * w.shape[2] * w.shape[3]
            w.copy_(torch.randn(w.shape, generator=gen, dtype=torch.float64) * (2.0 / fan_in) ** 0.5)
            z = br.conv(y)
            w.mul_(round3(1.0 / z.std().item()))
            randomize_bn(br.bn, gen)
        if blk.identity is not None:
            randomize_bn(blk.identity, gen)
        if not isinstance(blk.attn, torch.nn.Identity):
            fc1, fc2 = blk.attn.fc1, blk.attn.fc2
            fc1.weight.copy_(torch.randn(fc1.weight.shape, generator=gen, dtype=torch.float64) / fc1.in_channels ** 0.5)
            fc1.bias.copy_(torch.rand(fc1.bias.shape, generator=gen, dtype=torch.float64) - 0.5)
            fc2.weight.copy_(torch.randn(fc2.weight.shape, generator=gen, dtype=torch.float64) * 1.5 / fc2.in_channels ** 0.5)
            fc2.bias.copy_(torch.rand(fc2.bias.shape, generator=gen, dtype=torch.float64) - 0.5)
        y = blk(y)
    fc = m.head.fc
    fc.weight.copy_(torch.randn(fc.weight.shape, generator=gen, dtype=torch.float64) / fc.in_features ** 0.5)
    fc.bias.copy_(torch.rand(fc.bias.shape, generator=gen, dtype=torch.float64) - 0.5)


@torch.no_grad()
def forward_all(m, x):
    outs = {}
    y = m.stem(x)
    outs["stage0"] = y
    for i, st in enumerate(m.stages):
        y = st(y)
        outs[f"stage{i + 1}"] = y
    y = m.final_conv(y)
    outs["logits"] = m.forward_head(y)
    full = m(x)
    assert torch.equal(full, outs["logits"]), "staged forward != model forward"
    return outs


def model_from_sd(fx, sd):
    """timm model (float64) holding exactly the values of sd (any float dtype)."""
    m = build(fx)
    m.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}, strict=True)
    return m.double().eval()


def layer_table(fx, m):
    """Per-layer (official numbering: stem = layer 0) structure of the timm model."""
    rows = []
    official_g = [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26]  # DingXiaoH optional_groupwise_layers
    for idx, (name, blk) in enumerate(blocks_of(m)):
        c = blk.conv_kxk.conv
        stage = 0 if name == "stem" else int(name.split(".")[1]) + 1
        block = 0 if name == "stem" else int(name.split(".")[2])
        rows.append(dict(
            layer=idx, timm_prefix=name, official_prefix="stage0" if name == "stem" else f"stage{stage}.{block}",
            stage=stage, block=block, in_chs=c.in_channels, out_chs=c.out_channels, stride=c.stride[0],
            groups=c.groups, identity=blk.identity is not None,
            se_rd_chs=None if isinstance(blk.attn, torch.nn.Identity) else blk.attn.fc1.out_channels,
            official_g4_map_groups=(fx["groups"] if (fx["groups"] and idx in official_g) else 1),
        ))
    return rows


def check_official(fx, repo, off_train, off_deploy, x64, ref_train, ref_deploy, deploy64_sd, groups_map):
    sys.path.insert(0, repo)
    import io
    import contextlib
    import repvgg as official  # noqa
    kw = dict(num_blocks=list(fx["depths"]), num_classes=fx["num_classes"], width_multiplier=list(fx["wf"]),
              override_groups_map=groups_map, use_se=fx["se"])
    with contextlib.redirect_stdout(io.StringIO()):
        mt = official.RepVGG(deploy=False, **kw)
        md = official.RepVGG(deploy=True, **kw)
    mt.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in off_train.items()}, strict=True)
    md.load_state_dict(off_deploy, strict=True)
    mt = mt.double().eval()
    md = md.double().eval()
    with torch.no_grad():
        lt = mt(x64)
        ld = md(x64)
        conv = official.repvgg_model_convert(mt, do_copy=True)
        lc = conv(x64)
    r = dict(
        train_logits_maxdiff=(lt - ref_train["logits"]).abs().max().item(),
        deploy_f32_logits_maxdiff=(ld - ref_deploy["logits"]).abs().max().item(),
        official_convert_logits_maxdiff=(lc - ref_deploy["logits"]).abs().max().item(),
    )
    csd = conv.state_dict()
    off64 = to_official(deploy64_sd)
    r["official_fusion_vs_ours_f64_maxdiff"] = max((csd[k] - v).abs().max().item() for k, v in off64.items())
    assert r["train_logits_maxdiff"] < 1e-10, r
    assert r["official_convert_logits_maxdiff"] < 1e-10, r
    assert r["official_fusion_vs_ours_f64_maxdiff"] < 1e-12, r
    assert r["deploy_f32_logits_maxdiff"] < 1e-3, r
    return r


def file_entry(path, out_dir, **kw):
    return dict(file=rel(path, out_dir), bytes=os.path.getsize(path), sha256=sha256(path), **kw)


def write_io(path, x32, ref_train, ref_deploy, deploy64_sd, meta):
    t = {"input": x32.contiguous()}
    for k, v in ref_train.items():
        t[f"train.{k}"] = v.contiguous()
    for k, v in ref_deploy.items():
        t[f"deploy.{k}"] = v.contiguous()
    for k, v in deploy64_sd.items():
        t[f"deploy64.{k}"] = v.contiguous()
    for v in t.values():
        assert v.dtype in (torch.float32, torch.float64)
    save_file(t, path, metadata=meta)


def reparam_keys(sd):
    return {k: v for k, v in sd.items() if ".reparam_conv." in k}


def run_reference(fx, sd, x32):
    """float64 references from the (possibly low precision) train state dict sd."""
    m64 = model_from_sd(fx, sd)
    x64 = x32.double()
    ref_train = forward_all(m64, x64)
    d64 = timm.utils.reparameterize_model(m64)  # copy; float64 fusion
    for _, blk in blocks_of(d64):
        assert blk.reparam_conv.weight.dtype == torch.float64
    ref_deploy = forward_all(d64, x64)
    deploy64_sd = state_dict_clean(reparam_keys(d64.state_dict()))
    return m64, d64, x64, ref_train, ref_deploy, deploy64_sd


def gen_fixture(fx, out_dir, official_repo):
    name = fx["name"]
    torch.manual_seed(fx["seed"])
    gen = torch.Generator().manual_seed(fx["seed"])
    xgen = torch.Generator().manual_seed(fx["seed"] + 1000)
    H, W = fx["input_hw"]
    x32 = torch.randn(BATCH, fx["in_chans"], H, W, generator=xgen, dtype=torch.float32)

    m = build(fx).double()
    randomize(m, x32.double(), gen)
    m32 = copy.deepcopy(m).float().eval()
    sd32 = state_dict_clean(m32.state_dict())
    assert all(v.dtype == torch.float32 for k, v in sd32.items() if not k.endswith("num_batches_tracked"))
    assert any(k.endswith("num_batches_tracked") for k in sd32)

    # timm's own float32 fusion (what a user gets from reparameterize_model on the f32 model)
    d32 = timm.utils.reparameterize_model(m32)
    dsd32 = state_dict_clean(d32.state_dict())
    assert all(v.dtype == torch.float32 for v in dsd32.values())

    m64, d64, x64, ref_train, ref_deploy, deploy64_sd = run_reference(fx, sd32, x32)

    fw = max((dsd32[k].double() - v).abs().max().item() for k, v in deploy64_sd.items() if k.endswith("weight"))
    fb = max((dsd32[k].double() - v).abs().max().item() for k, v in deploy64_sd.items() if k.endswith("bias"))
    with torch.no_grad():
        l32 = d32.double()(x64)
    train_vs_deploy64 = (ref_train["logits"] - ref_deploy["logits"]).abs().max().item()
    f32fused_logits = (l32 - ref_train["logits"]).abs().max().item()
    stage_max = {k: v.abs().max().item() for k, v in ref_train.items()}
    stage_rms = {k: v.pow(2).mean().sqrt().item() for k, v in ref_train.items()}
    print(f"[{name}] max|act| " + " ".join(f"{k}={v:.3g}" for k, v in stage_max.items()))
    print(f"[{name}] rms      " + " ".join(f"{k}={v:.3g}" for k, v in stage_rms.items()))
    print(f"[{name}] max|timm f32 fused - f64 fused|: weight {fw:.3e} bias {fb:.3e}; "
          f"logits train64 vs deploy64 {train_vs_deploy64:.3e}; timm-f32-fused logits (f64 eval) vs train64 "
          f"{f32fused_logits:.3e}")
    for k, v in stage_max.items():
        assert 0.05 < v < 100, f"{name}: activations of {k} not O(1): {v}"
    assert train_vs_deploy64 < 1e-10

    # NB: safetensors writes __metadata__ in hash-map order, so a multi-key dict makes the bytes vary
    # from run to run; a single key keeps files byte-reproducible.
    def meta(**kw):
        kv = dict(fixture=name, generator="scripts/ref/gen_fixtures.py")
        kv.update(kw)
        return {"repvgg_ref": " ".join(f"{k}={v}" for k, v in kv.items())}

    files = []
    p = os.path.join(out_dir, f"{name}.train.safetensors")
    save_file(sd32, p, metadata=meta(form="train", naming="timm"))
    files.append(file_entry(p, out_dir, form="train", naming="timm", dtype="float32",
                            note="num_batches_tracked (int64 scalar) present, as in timm"))
    p = os.path.join(out_dir, f"{name}.deploy.safetensors")
    save_file(dsd32, p, metadata=meta(form="deploy", naming="timm"))
    files.append(file_entry(p, out_dir, form="deploy", naming="timm", dtype="float32",
                            note="timm.utils.reparameterize_model() float32 fusion"))
    p = os.path.join(out_dir, f"{name}.io.safetensors")
    write_io(p, x32, ref_train, ref_deploy, deploy64_sd, meta(form="io"))
    files.append(file_entry(p, out_dir, form="io", naming="timm", dtype="input float32, rest float64"))

    table = layer_table(fx, m32)
    groups_map = {r["layer"]: r["groups"] for r in table if r["groups"] > 1}
    official_check = None
    if fx["official"]:
        off_train, off_deploy = to_official(sd32), to_official(dsd32)
        p = os.path.join(out_dir, f"{name}.official.train.safetensors")
        save_file(off_train, p, metadata=meta(form="train", naming="official"))
        files.append(file_entry(p, out_dir, form="train", naming="official", dtype="float32"))
        p = os.path.join(out_dir, f"{name}.official.deploy.safetensors")
        save_file(off_deploy, p, metadata=meta(form="deploy", naming="official"))
        files.append(file_entry(p, out_dir, form="deploy", naming="official", dtype="float32",
                                note="same tensors as <name>.deploy.safetensors, renamed"))
        if official_repo:
            official_check = check_official(fx, official_repo, off_train, off_deploy, x64, ref_train, ref_deploy,
                                            deploy64_sd, groups_map)
            print(f"[{name}] official repo check: {official_check}")

    half = []
    if fx.get("half_variants"):
        for dt, tag in ((torch.float16, "f16"), (torch.bfloat16, "bf16")):
            hname = f"{name}_{tag}"
            sdh = {k: (v.to(dt) if v.is_floating_point() else v) for k, v in sd32.items()}
            _, _, _, rt, rd, d64h = run_reference(fx, sdh, x32)
            p = os.path.join(out_dir, f"{hname}.train.safetensors")
            save_file(sdh, p, metadata=meta(fixture=hname, form="train", naming="timm"))
            fe = [file_entry(p, out_dir, form="train", naming="timm", dtype=str(dt).replace("torch.", ""),
                             note=f"= {name} weights rounded (round-to-nearest-even) to {tag}")]
            p = os.path.join(out_dir, f"{hname}.io.safetensors")
            write_io(p, x32, rt, rd, d64h, meta(fixture=hname, form="io"))
            fe.append(file_entry(p, out_dir, form="io", naming="timm", dtype="input float32, rest float64",
                                 note=f"references computed in float64 from the {tag}-rounded weights"))
            dlog = (rt["logits"] - ref_train["logits"]).abs().max().item()
            print(f"[{hname}] max|logits({tag} weights) - logits(f32 weights)| = {dlog:.3e}")
            half.append(dict(name=hname, files=fe, base=name, weight_dtype=tag,
                             logits_maxdiff_vs_f32_weights=dlog))

    entry = dict(
        name=name,
        description=fx["desc"],
        seed=fx["seed"],
        timm_config=dict(
            builder="ByobNet(ByoModelCfg(blocks=_rep_vgg_bcfg(d=depths, wf=wf, groups=groups), stem_type='rep', "
                    "stem_chs=stem_chs" + (", attn_layer='se', attn_kwargs=dict(rd_ratio=0.0625, rd_divisor=1)"
                                           if fx["se"] else "") + "), num_classes, in_chans)",
            depths=list(fx["depths"]), wf=list(fx["wf"]), stem_chs=fx["stem_chs"], groups=fx["groups"],
            stage_chs=[st[0].conv_kxk.conv.out_channels for st in m32.stages],
            se=(dict(attn_layer="se", **SE_KWARGS) if fx["se"] else None),
            num_classes=fx["num_classes"], in_chans=fx["in_chans"], bn_eps=BN_EPS,
        ),
        layers=table,
        official_override_groups_map=groups_map,
        timm_groups_equal_official_g_map=all(r["groups"] == r["official_g4_map_groups"] for r in table),
        input_shape=list(x32.shape),
        output_shapes={k: list(v.shape) for k, v in ref_train.items()},
        files=files,
        max_abs_activation=stage_max,
        rms_activation=stage_rms,
        fusion=dict(
            timm_f32_vs_f64_max_abs_weight=fw,
            timm_f32_vs_f64_max_abs_bias=fb,
            train64_vs_deploy64_logits_max_abs=train_vs_deploy64,
            timm_f32_fused_vs_train64_logits_max_abs=f32fused_logits,
        ),
        official_repo_check=official_check,
    )
    for h in half:
        h.update(description=f"{name} with weights stored as {h['weight_dtype']}", timm_config=entry["timm_config"],
                 layers=table, input_shape=entry["input_shape"], output_shapes=entry["output_shapes"])
    return entry, half


IO_LAYOUT = {
    "input": "[N,C,H,W] float32 (the float64 references use input.double())",
    "train.stage0": "float64, output of timm model.stem (the stem RepVGG block, incl. its ReLU)",
    "train.stage{1..4}": "float64, output of timm model.stages[k-1]",
    "train.logits": "float64, [N,num_classes] (global avg pool + head.fc)",
    "deploy.*": "same, computed with a float64 timm.utils.reparameterize_model() of the float64 train model",
    "deploy64.<timm key>": "float64 fused weights/biases of that float64 reparameterization, every "
                           "'*.reparam_conv.weight|bias' (stem.reparam_conv.*, stages.i.j.reparam_conv.*)",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "tests", "fixtures"))
    ap.add_argument("--official-repo", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    fixtures = []
    for fx in FIXTURES:
        e, half = gen_fixture(fx, args.out, args.official_repo)
        fixtures.append(e)
        fixtures.extend(half)
    manifest = dict(
        generator="scripts/ref/gen_fixtures.py",
        versions=versions(),
        conventions=dict(
            bn_eps=BN_EPS,
            timm_keys=dict(
                stem="stem.{conv_kxk,conv_1x1}.{conv.weight, bn.weight|bias|running_mean|running_var|num_batches_tracked}",
                block="stages.{i}.{j}.{conv_kxk,conv_1x1}.* ; identity BN has no '.bn' level: "
                      "stages.{i}.{j}.identity.{weight,bias,running_mean,running_var,num_batches_tracked}",
                se="<block>.attn.fc1.{weight,bias} [rd,C,1,1], <block>.attn.fc2.{weight,bias} [C,rd,1,1]",
                deploy="<block>.reparam_conv.{weight,bias} (+ unchanged attn.* and head.*)",
                head="head.fc.{weight,bias}",
                convs="all convs bias-free in train form; kxk conv padding 1, 1x1 conv padding 0, same stride/groups",
            ),
            official_renaming=dict(
                rules=["stem.* -> stage0.*", "stages.{i}.{j}.* -> stage{i+1}.{j}.*",
                       "conv_kxk.{conv,bn}.* -> rbr_dense.{conv,bn}.*", "conv_1x1.{conv,bn}.* -> rbr_1x1.{conv,bn}.*",
                       "identity.* -> rbr_identity.*", "reparam_conv.* -> rbr_reparam.*",
                       "attn.fc1.* -> se.down.*", "attn.fc2.* -> se.up.*", "head.fc.* -> linear.*"],
                source="https://github.com/DingXiaoH/RepVGG repvgg.py / se_block.py (commit eae7c52 read)",
            ),
            num_batches_tracked="present (int64 scalar, value 0) for every BN in *.train.safetensors, timm and official naming; loaders must ignore it",
            io_layout=IO_LAYOUT,
            se=("timm SEModule: mean over H,W -> fc1 (1x1 conv, bias) -> ReLU -> fc2 (1x1 conv, bias) -> sigmoid -> x*gate; "
                "applied after the branch sum, before the block ReLU; rd = round(C/16) (make_divisible(C*0.0625, 1)); "
                "official: rd = C//16 (identical when C % 16 == 0, true for all fixtures) and avg_pool2d(kernel=W) "
                "(global only for square maps)"),
            groups=("timm _rep_vgg_bcfg(groups=g): block j of EVERY stage (index restarting at 0 in each stage, stem "
                    "excluded) gets groups=g iff (j+1) % 2 == 0, i.e. odd in-stage index j=1,3,5,... The official repo uses "
                    "a global layer counter (stem = layer 0, first block of stage1 = layer 1, continuing across "
                    "stages) with groups on layers 2,4,...,26. The two coincide iff every stage before the "
                    "last has even depth (true for B-depths 4,6,16,1 -> timm b*g4 == official B*g4); they differ "
                    "otherwise (see fixture g4_odd). The stem and stride-2 first blocks are never grouped in timm."),
        ),
        fixtures=fixtures,
    )
    write_json(os.path.join(args.out, "manifest.json"), manifest)
    print("wrote", os.path.join(args.out, "manifest.json"))


if __name__ == "__main__":
    main()
