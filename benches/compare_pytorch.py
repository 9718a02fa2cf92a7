#!/usr/bin/env python3
"""Time the seed's PyTorch training step against `dcgan-wgpu bench`, interleaved.

Each round times the seed's step in PyTorch (on the CPU with every core, and on CUDA
when available: median of --steps steps after --warmup untimed ones), then runs
`dcgan-wgpu bench --json` with the same settings right after, so both see the same
machine load. Rounds repeat that; the table shows every round's medians, the median
over rounds, and the ratio dcgan-wgpu / PyTorch (below 1: dcgan-wgpu is faster).

Both sides use synthetic images. PyTorch's data loading is left out (a pool of
batches already on the device), which slightly favours PyTorch: dcgan-wgpu's step
includes gathering and normalising its batch.

    python3 benches/compare_pytorch.py                      # the seed's settings
    python3 benches/compare_pytorch.py --batch-size 16 --steps 2 --rounds 1 --feature-maps 16
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent

# The seed's configuration (000_bd7b2be3e4f7af58.txt).
NOISE_DIMENSION = 50
OPTIMIZER_LR = 0.0002
OPTIMIZER_BETAS = (0.5, 0.999)


# The seed's Generator and Discriminator, unchanged but for the width, which the
# seed hard-codes as num_feature_maps = 64 (--feature-maps sets it here).
class Generator(nn.Module):
    """
    DCGan Generator
    """

    def __init__(self, num_feature_maps=64):
        super().__init__()
        self.layers = nn.Sequential(
            # First upsampling block
            nn.ConvTranspose2d(NOISE_DIMENSION, num_feature_maps * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(num_feature_maps * 8),
            nn.ReLU(),
            # Second upsampling block
            nn.ConvTranspose2d(num_feature_maps * 8, num_feature_maps * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(num_feature_maps * 4),
            nn.ReLU(),
            # Third upsampling block
            nn.ConvTranspose2d(num_feature_maps * 4, num_feature_maps * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(num_feature_maps * 2),
            nn.ReLU(),
            # Fourth upsampling block
            nn.ConvTranspose2d(num_feature_maps * 2, num_feature_maps, 4, 2, 1, bias=False),
            nn.BatchNorm2d(num_feature_maps),
            nn.ReLU(),
            # Fifth upsampling block: note Tanh
            nn.ConvTranspose2d(num_feature_maps, 1, 1, 1, 2, bias=False),
            nn.Tanh(),
        )

    def forward(self, x):
        """Forward pass"""
        return self.layers(x)


class Discriminator(nn.Module):
    """
    DCGan Discriminator
    """

    def __init__(self, num_feature_maps=64):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, num_feature_maps, 4, 2, 1, bias=False),
            nn.BatchNorm2d(num_feature_maps * 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(num_feature_maps, num_feature_maps * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(num_feature_maps * 2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(num_feature_maps * 2, num_feature_maps * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(num_feature_maps * 4),
            nn.LeakyReLU(0.2),
            nn.Conv2d(num_feature_maps * 4, 1, 4, 2, 1, bias=False),
            nn.Flatten(),
            nn.Linear(1, 1),
            nn.Sigmoid(),
        )

    def forward(self, x):
        """Forward pass"""
        return self.layers(x)


def weights_init(m):
    """Normal weight initialization as suggested for DCGANs"""
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def generate_noise(number_of_images=1, noise_dimension=NOISE_DIMENSION, device=None):
    """Generate noise for number_of_images images, with a specific noise_dimension"""
    return torch.randn(number_of_images, noise_dimension, 1, 1, device=device)


def efficient_zero_grad(model):
    """Apply zero_grad more efficiently"""
    for param in model.parameters():
        param.grad = None


def forward_and_backward(model, data, loss_function, targets):
    """Perform forward and backward pass in a generic way. Returns loss value."""
    outputs = model(data)
    error = loss_function(outputs, targets)
    error.backward()
    return error.item()


def perform_train_step(generator, discriminator, real_data, loss_function,
                       generator_optimizer, discriminator_optimizer, device):
    """The seed's perform_train_step: same operations, same order."""
    real_label, fake_label = 1.0, 0.0
    real_images = real_data[0].to(device)
    actual_batch_size = real_images.size(0)
    label = torch.full((actual_batch_size, 1), real_label, device=device)
    # Discriminator: real batch, then the detached fake batch, then its step.
    efficient_zero_grad(discriminator)
    error_real_images = forward_and_backward(discriminator, real_images, loss_function, label)
    noise = generate_noise(actual_batch_size, device=device)
    generated_images = generator(noise)
    label.fill_(fake_label)
    error_generated_images = forward_and_backward(
        discriminator, generated_images.detach(), loss_function, label)
    discriminator_optimizer.step()
    # Generator: the updated discriminator on the same fakes, then its step.
    efficient_zero_grad(generator)
    label.fill_(real_label)
    error_generator = forward_and_backward(discriminator, generated_images, loss_function, label)
    generator_optimizer.step()
    error_discriminator = error_real_images + error_generated_images
    return error_generator, error_discriminator


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pytorch(device, args):
    """Median seconds per seed training step on `device`, after the warm-up."""
    torch.manual_seed(42)
    generator = Generator(args.feature_maps).apply(weights_init).to(device)
    discriminator = Discriminator(args.feature_maps).apply(weights_init).to(device)
    generator.train()
    discriminator.train()
    loss_function = nn.BCELoss()
    generator_optimizer = torch.optim.AdamW(
        generator.parameters(), lr=OPTIMIZER_LR, betas=OPTIMIZER_BETAS)
    discriminator_optimizer = torch.optim.AdamW(
        discriminator.parameters(), lr=OPTIMIZER_LR, betas=OPTIMIZER_BETAS)
    # A few batches of synthetic images in [-1, 1], already where the step reads them
    # (the seed's DataLoader is not what is being measured).
    batches = [(torch.rand(args.batch_size, 1, 28, 28, device=device) * 2 - 1,)
               for _ in range(4)]
    seconds = []
    for step in range(args.warmup + args.steps):
        synchronize(device)
        started = time.perf_counter()
        perform_train_step(generator, discriminator, batches[step % len(batches)],
                           loss_function, generator_optimizer, discriminator_optimizer, device)
        synchronize(device)
        if step >= args.warmup:
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def default_binary():
    """`cargo build --release` (quick when up to date), then its dcgan-wgpu binary."""
    subprocess.run(["cargo", "build", "--release", "--bin", "dcgan-wgpu"], cwd=REPO,
                   check=True, stdout=sys.stderr)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    name = "dcgan-wgpu.exe" if os.name == "nt" else "dcgan-wgpu"
    return target / "release" / name


def time_dcgan_wgpu(binary, args):
    """(median seconds per step, adapter) from one `dcgan-wgpu bench --json` run."""
    command = [str(binary), "bench", "--json", "--no-profile",
               "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--feature-maps", str(args.feature_maps)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({run.returncode}):\n{run.stderr}")
    # The JSON document is the whole of stdout; anything before it is ignored.
    document = json.loads(run.stdout[run.stdout.index("{"):])
    result = document["results"][0]
    return result["ms_per_step"]["median"] / 1e3, result["adapter"]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pytorch_devices():
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda:0"))
    return devices


def device_name(device):
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"


def run_rounds(binary, args):
    """[{"pytorch": {device: seconds}, "dcgan_wgpu": seconds}] per round, and the adapter."""
    rounds, adapter = [], None
    for number in range(1, args.rounds + 1):
        pytorch = {}
        for device in pytorch_devices():
            print(f"round {number}: PyTorch on {device} ...", file=sys.stderr)
            pytorch[str(device)] = time_pytorch(device, args)
        print(f"round {number}: dcgan-wgpu bench ...", file=sys.stderr)
        wgpu_seconds, adapter = time_dcgan_wgpu(binary, args)
        rounds.append({"pytorch": pytorch, "dcgan_wgpu": wgpu_seconds})
    return rounds, adapter


def summarise(rounds):
    """Median over rounds of every column, and dcgan-wgpu / PyTorch per device."""
    devices = list(rounds[0]["pytorch"])
    pytorch = {d: statistics.median(r["pytorch"][d] for r in rounds) for d in devices}
    wgpu_seconds = statistics.median(r["dcgan_wgpu"] for r in rounds)
    ratios = {d: wgpu_seconds / pytorch[d] for d in devices}
    return {"pytorch": pytorch, "dcgan_wgpu": wgpu_seconds, "ratio": ratios}


def print_table(machine, rounds, summary, args):
    for key, value in machine.items():
        print(f"{key + ':':<18}{value}")
    print(f"{'settings:':<18}batch {args.batch_size}, feature maps {args.feature_maps}, "
          f"median of {args.steps} steps after {args.warmup} warm-up, {args.rounds} rounds")
    devices = list(summary["pytorch"])
    headers = [f"PyTorch {d} ms" for d in devices] + ["dcgan-wgpu ms"]
    print(f"{'round':<8}" + "".join(f"{h:>20}" for h in headers))
    for number, r in enumerate(rounds, 1):
        cells = [r["pytorch"][d] for d in devices] + [r["dcgan_wgpu"]]
        print(f"{number:<8}" + "".join(f"{1e3 * c:>20.1f}" for c in cells))
    cells = [summary["pytorch"][d] for d in devices] + [summary["dcgan_wgpu"]]
    print(f"{'median':<8}" + "".join(f"{1e3 * c:>20.1f}" for c in cells))
    for device, ratio in summary["ratio"].items():
        print(f"dcgan-wgpu / PyTorch {device}: {ratio:.2f}")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5,
                        help="timed steps per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps before each measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="PyTorch then dcgan-wgpu, this many times")
    parser.add_argument("--feature-maps", type=int, default=64,
                        help="model width (the seed's is 64)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="PyTorch CPU threads (default: every core, os.cpu_count())")
    parser.add_argument("--binary", type=Path,
                        help="dcgan-wgpu binary (default: cargo build --release, then "
                             "target/release/dcgan-wgpu)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead of the table")
    args = parser.parse_args()
    for name in ("batch_size", "steps", "rounds", "feature_maps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    # As the seed does: let cuDNN pick its fastest algorithms.
    torch.backends.cudnn.benchmark = True
    binary = args.binary or default_binary()
    rounds, adapter = run_rounds(binary, args)
    summary = summarise(rounds)
    machine = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "pytorch devices": ", ".join(device_name(d) for d in pytorch_devices()),
        "adapter": adapter,
    }
    if args.json:
        print(json.dumps({"machine": machine, "settings": vars(args) | {"binary": str(binary)},
                          "rounds": rounds, "median": summary}, indent=2))
    else:
        print_table(machine, rounds, summary, args)


if __name__ == "__main__":
    main()
