"""Train the unrolled QSM network (net.py) on domain-randomised 48^3 examples only
(:func:`qmri.models.qsmnet.data_randomised.random_example`, base brains 22000.., validation on fixed
examples of 23000..), L1 loss inside the mask, Adam with cosine decay, stopped after MINUTES.
Usage: train.py OUT_DIR [MINUTES] [STEPS_PLANNED] [N_BASES]. Writes OUT_DIR/unrolled.pt (best by
validation NRMSE) and OUT_DIR/history.json."""

import json
import os
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

sys.path.insert(0, os.path.dirname(__file__))
from net import UnrolledQSM  # noqa: E402
from qmri.classical.qsm import nrmse  # noqa: E402
from qmri.models.qsmnet.data_randomised import base_brain, random_example  # noqa: E402

out = sys.argv[1]
minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 50
planned = int(sys.argv[3]) if len(sys.argv) > 3 else 3500
n_bases = int(sys.argv[4]) if len(sys.argv) > 4 else 6
SIZE, BATCH, VAL_EVERY = 48, 2, 250
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)


class Examples(IterableDataset):
    def __init__(self, seeds):
        self.seeds = seeds

    def __iter__(self):
        bases = [base_brain(s) for s in self.seeds]
        rng = np.random.default_rng(1234)
        while True:
            f, c, m, vox = random_example(bases[int(rng.integers(len(bases)))], rng, SIZE, SIZE)
            yield f[None], c[None], m[None].astype(np.float32)


vbase = base_brain(23000)
vrng = np.random.default_rng(11_000)
val = [random_example(vbase, vrng, SIZE, SIZE)[:3] for _ in range(16)]
loader = iter(DataLoader(Examples(list(range(22000, 22000 + n_bases))), batch_size=BATCH, num_workers=1, prefetch_factor=4))
net = UnrolledQSM()
opt = torch.optim.Adam(net.parameters(), 1e-3)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=planned, pct_start=0.05)
hist, best, t0, step, run_loss = [], float("inf"), time.time(), 0, []


def validate():
    net.eval()
    with torch.no_grad():
        r = [nrmse(net(torch.from_numpy(f[None, None]), torch.from_numpy(m[None, None].astype(np.float32)))[0, 0].numpy(), c, m) for f, c, m in val]
    net.train()
    return float(np.mean(r))


while step < planned and time.time() - t0 < 60 * minutes:
    f, c, m = next(loader)
    y = net(f, m)
    loss = ((y - c).abs() * m).sum() / m.sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    step += 1
    run_loss.append(float(loss.detach()))
    if step % VAL_EVERY == 0 or step == planned:
        v = validate()
        lam = torch.nn.functional.softplus(net.raw_lam).detach().numpy().round(4).tolist()
        hist.append({"step": step, "minutes": (time.time() - t0) / 60, "train_l1_ppm": float(np.mean(run_loss)), "val_nrmse": v, "lambda": lam})
        run_loss = []
        print(json.dumps(hist[-1]), flush=True)
        if v < best:
            best = v
            torch.save({"state_dict": net.state_dict(), "step": step, "val_nrmse": v}, os.path.join(out, "unrolled.pt"))
        json.dump(hist, open(os.path.join(out, "history.json"), "w"), indent=1)
print("done", step, "steps, best val", best, flush=True)
