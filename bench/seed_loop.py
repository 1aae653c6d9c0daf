"""The seed notebook's training loop, reproduced for comparison (not for use).

    python -m bench.seed_loop --epochs 15

torchvision's MNIST with a per-item ToTensor transform, a DataLoader at batch 32 with shuffling,
Adam at a constant lr 0.01, MSE, the seed's own model, on the CPU or GPU. One fix only: after
each epoch the test MSE is measured (the seed never evaluates), with the project's evaluation,
and printed as a JSON line, so bench.train_speed can time it to a given quality.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision
import torchvision.transforms as transforms
from torch.utils.data import DataLoader

from service.device import resolve_device
from service.model import AutoEncoder
from training.data import ensure_mnist, load_mnist
from training.evaluate import evaluate


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    ensure_mnist(args.data_dir)  # the files only; the seed's own dataset class reads them
    transform = transforms.Compose([transforms.ToTensor()])
    df_train = torchvision.datasets.MNIST(root=args.data_dir, train=True, transform=transform, download=False)
    loader_train = DataLoader(df_train, batch_size=32, shuffle=True)
    test = load_mnist(args.data_dir, train=False)

    torch.manual_seed(0)
    model = AutoEncoder().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    criterion = torch.nn.MSELoss()
    for epoch in range(args.epochs):
        model.train()
        for train_x, _ in loader_train:
            train_x = train_x.to(device)
            output = model(train_x)
            loss = criterion(output, train_x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        ev = evaluate(model, test, device=device, with_ssim=False)
        record = {"epoch": epoch + 1, "test_mse": ev.mse, "elapsed_s": round(time.perf_counter() - started, 3)}
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
