"""Translate photos with an official CUT generator checkpoint (latest_net_G.pth) into 256 px PNGs.
Run with the official checkout as the working directory (its modules import flatly):

    cd official-cut && python /path/to/bench/official_generate.py --ckpt DIR/latest_net_G.pth --photos DIR \
        --size 128 --out DIR [official model options used in training, e.g. --ngf 8]
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.getcwd())
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # cutlib, for the same translate path as ours


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--photos", required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--limit", type=int, default=0)
    a, extra = ap.parse_known_args()
    import torch
    from PIL import Image

    from cutlib.data import list_images
    from cutlib.generate import translate_files

    sys.argv = [sys.argv[0], "--dataroot", "unused", "--name", "gen", "--checkpoints_dir", "/tmp/official_gen",
                "--CUT_mode", "CUT", "--gpu_ids", "-1", *extra]
    from models import networks
    from options.train_options import TrainOptions

    opt = TrainOptions().parse()
    G = networks.define_G(opt.input_nc, opt.output_nc, opt.ngf, opt.netG, opt.normG, not opt.no_dropout,
                          opt.init_type, opt.init_gain, opt.no_antialias, opt.no_antialias_up, [], opt)
    state = torch.load(a.ckpt, map_location="cpu", weights_only=True)
    G.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})  # saved from a DataParallel
    G = G.to(a.device).eval()
    files = list_images(a.photos)
    files = files[: a.limit] if a.limit else files
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # border 0: the official generator's outputs as its own test.py paints them
    for i, img in translate_files(G, [(f, "") for f in files], a.size, 256, 8, a.device, border=0):
        Image.fromarray(img).save(out / f"{files[i].stem}.png")
    print(f"wrote {len(files)} images to {out}")


if __name__ == "__main__":
    main()
