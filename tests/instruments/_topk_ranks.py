"""One rank of the distributed top-k library test (run by torchrun, not collected by pytest).

``python _topk_ranks.py DATA OUT.pt LAYERS MAPS K BATCH``: scans DATA with the embedded
default model over torch.distributed, projects the shares, and rank 0 saves the merged
state and every projection (raw floats) to OUT.pt for the test to compare.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import torch

from deconvnet import models
from deconvnet.inputs import datasets
from deconvnet.instruments.topk import distributed

TIMEOUT = timedelta(seconds=120)


def main() -> None:
    data_dir, out, layers, maps, k, batch_size = sys.argv[1:7]
    group = distributed.Group.from_environment()
    assert group is not None, "run me under torchrun with WORLD_SIZE > 1"
    model = models.load("default")
    data = datasets.open_dataset(data_dir, model.preprocessing)
    with distributed.process_group(group, "cpu", TIMEOUT) as joined:
        device = joined.device
        index = distributed.scan_shards(
            model,
            data,
            layers.split(","),
            group,
            device,
            k=int(k),
            maps=maps,
            batch_size=int(batch_size),
            labels=data.class_labels(),
        )
        projections = distributed.project_shares(index, model, data, group, device)
    if projections is not None:
        torch.save(
            {
                "state": index.state.to_dict(),
                "num_images": index.num_images,
                "names": {str(i): name for i, name in index.names.items()},
                "passes": [projections.reverse_passes, projections.forward_images],
                "projections": {
                    f"{layer}/{channel}/{rank}": {
                        "projection": item.projection,
                        "patch": torch.from_numpy(item.patch.copy()),
                        "crop_box": list(item.crop_box),
                        "value": item.value,
                    }
                    for (layer, channel, rank), item in projections.items()
                },
            },
            out,
        )


if __name__ == "__main__":
    main()
