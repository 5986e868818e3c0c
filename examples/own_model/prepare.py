"""Stands for your own project: writes an image folder (scikit-learn's digits as PNGs) and a trained mynet.pt.

    python prepare.py    # images/train/<class>/*.png, images/test/<class>/*.png, mynet.pt
"""

from pathlib import Path

import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn

import autocomp.data
from mynet import make_net

HERE = Path(__file__).resolve().parent


def write_images(root: Path) -> None:
    """Every digit as an 8x8 grey PNG; one in five goes to the test folder."""
    digits = load_digits()
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / ("test" if index % 5 == 0 else "train") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype("uint8"), mode="L").save(folder / f"{index}.png")


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int = 15) -> None:
    """Plain SGD, as any training script would do."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch))
        for batch in order.split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()


if __name__ == "__main__":
    torch.manual_seed(0)
    write_images(HERE / "images")
    # The pixels autocomp reads from the folder (scaled to [0, 1], standardised by the training images' statistics),
    # less the 300 training images mynet.yaml holds out (data.val_size) to score candidates on images the model never saw.
    data = autocomp.data.load_dataset("image_folder", data_dir=HERE / "images", val_size=300)
    model = make_net(num_classes=data.num_classes, in_channels=1)
    train(model, *autocomp.data.as_tensors(data.train))
    torch.save(model.state_dict(), HERE / "mynet.pt")
    print(f"wrote {HERE / 'images'} and {HERE / 'mynet.pt'}")
