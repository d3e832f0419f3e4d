"""SupportBank under DistributedDataParallel: the banks stay out of DDP's buffer broadcast."""

from __future__ import annotations

import torch
from torch import nn

from medmoe.blocks import MoERetriever, exclude_banks_from_ddp_broadcast
from medmoe.engines import finish_distributed

M, N, D = 2, 2, 4


class _Net(nn.Module):
    """A linear head after a per-rank (unsynchronised) retriever bank, so DDP has parameters to reduce."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(D, 1)
        self.retriever = MoERetriever(M, N, D, mode="mean", capacity=8, sync_bank=False)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, ids: list[str]) -> torch.Tensor:
        return self.head(self.retriever(tokens, mask, ids).tokens).sum()


def _worker(rank: int, world: int, path: str, result: str, exclude: bool) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    net = _Net()
    ddp = nn.parallel.DistributedDataParallel(exclude_banks_from_ddp_broadcast(net) if exclude else net)
    for step in range(2):  # DDP broadcasts buffers before each forward: the second one sees the first's writes
        x = torch.full((2, M, N, D), float(10 * rank + step))
        ddp(x, torch.ones(2, M, dtype=torch.bool), [f"r{rank}-s{step}-{i}" for i in range(2)]).backward()
    bank = net.retriever.bank
    torch.save({"ids": bank.ids, "embeddings": bank.embeddings.clone()}, f"{result}{rank}.pt")
    finish_distributed()  # barrier, destroy, exit 0 without the finalization abort (medmoe.engines)


def _run(tmp_path, exclude: bool) -> list[dict]:
    import torch.multiprocessing as mp

    tag = "excluded" if exclude else "broadcast"
    mp.spawn(_worker, args=(2, str(tmp_path / f"init_{tag}"), str(tmp_path / tag), exclude), nprocs=2)
    return [torch.load(tmp_path / f"{tag}{r}.pt", weights_only=True) for r in range(2)]


def test_unsynchronised_banks_keep_their_own_rows_only_when_excluded(tmp_path) -> None:
    for rank, bank in enumerate(_run(tmp_path, exclude=True)):
        assert bank["ids"][:4] == [f"r{rank}-s{s}-{i}" for s in range(2) for i in range(2)]
        values = bank["embeddings"][:4, 0, 0, 0].tolist()
        assert values == [10 * rank, 10 * rank, 10 * rank + 1, 10 * rank + 1]  # each row holds its own id's data

    # Control: DDP's default broadcast copies rank 0's step-0 rows into rank 1, under rank 1's ids.
    rank1 = _run(tmp_path, exclude=False)[1]
    assert rank1["ids"][:2] == ["r1-s0-0", "r1-s0-1"]
    assert rank1["embeddings"][:2, 0, 0, 0].tolist() == [0.0, 0.0]


def test_names_of_every_bank_buffer_are_listed_and_existing_names_kept() -> None:
    net = _Net()
    net._ddp_params_and_buffers_to_ignore = ["head.bias"]
    exclude_banks_from_ddp_broadcast(net)
    bank_buffers = {f"retriever.bank.{n}" for n in ("embeddings", "presence", "filled", "pointer", "stamp")}
    assert set(net._ddp_params_and_buffers_to_ignore) == bank_buffers | {"head.bias"}
