"""VM sizes: the GPUs per node a job's MPI workers follow, and sizes refused (retired, not CUDA)."""

from __future__ import annotations

import dataclasses
import re

from bert_tf.errors import UsageError


@dataclasses.dataclass(frozen=True)
class VmSize:
    """An Azure VM size: its GPUs per node (0: a CPU size) and their model."""
    name: str
    gpus: int
    gpu: str = ""

    def describe(self) -> str:
        return f"{self.name}: {self.gpus} x {self.gpu}" if self.gpus else f"{self.name}: no GPUs"


# Current sizes with NVIDIA GPUs (whole GPUs only). Every size of a family other than N (D, E, F,
# B, M, L, A, H, ...: Standard_D4s_v3, Standard_E16s_v5) has no GPUs: vm_size_info says so
# without a table.
_SIZES = [
    VmSize("Standard_NC4as_T4_v3", 1, "T4 16GB"),
    VmSize("Standard_NC8as_T4_v3", 1, "T4 16GB"),
    VmSize("Standard_NC16as_T4_v3", 1, "T4 16GB"),
    VmSize("Standard_NC64as_T4_v3", 4, "T4 16GB"),
    VmSize("Standard_NC24ads_A100_v4", 1, "A100 80GB PCIe"),
    VmSize("Standard_NC48ads_A100_v4", 2, "A100 80GB PCIe"),
    VmSize("Standard_NC96ads_A100_v4", 4, "A100 80GB PCIe"),
    VmSize("Standard_ND96asr_v4", 8, "A100 40GB SXM, InfiniBand"),
    VmSize("Standard_ND96amsr_A100_v4", 8, "A100 80GB SXM, InfiniBand"),
    VmSize("Standard_NC40ads_H100_v5", 1, "H100 NVL 94GB"),
    VmSize("Standard_NC80adis_H100_v5", 2, "H100 NVL 94GB"),
    VmSize("Standard_ND96isr_H100_v5", 8, "H100 80GB SXM, InfiniBand"),
    VmSize("Standard_ND96isr_H200_v5", 8, "H200 141GB SXM, InfiniBand"),
    VmSize("Standard_NV36ads_A10_v5", 1, "A10 24GB"),
    VmSize("Standard_NV72ads_A10_v5", 2, "A10 24GB"),
]


VM_SIZES = {size.name.lower(): size for size in _SIZES}


# Retired GPU sizes: (what they were, when they went, what to use instead).
_NCV3 = "the NCv3 series (V100) of the original BERT recipe, retired on 30 September 2025"


_OLD = "retired in September 2023"


RETIRED = {
    "standard_nc6s_v3": (_NCV3, "Standard_NC24ads_A100_v4 (1 x A100 80GB)"),
    "standard_nc12s_v3": (_NCV3, "Standard_NC48ads_A100_v4 (2 x A100 80GB)"),
    "standard_nc24s_v3": (_NCV3, "Standard_NC96ads_A100_v4 (4 x A100 80GB)"),
    "standard_nc24rs_v3": (_NCV3, "Standard_NC96ads_A100_v4 (4 x A100 80GB), or "
                                  "Standard_ND96asr_v4 (8 x A100 with InfiniBand) across nodes"),
    **{f"standard_nc{n}s_v2": (f"the NCv2 series (P100), {_OLD}",
                               "Standard_NC24ads_A100_v4 (1 x A100) or Standard_NC4as_T4_v3")
       for n in ("6", "12", "24", "24r")},
    **{f"standard_nc{n}": (f"the NC series (K80), {_OLD}", "Standard_NC4as_T4_v3 (1 x T4)")
       for n in ("6", "12", "24", "24r")},
    **{f"standard_nd{n}s": (f"the ND series (P40), {_OLD}", "Standard_NC24ads_A100_v4 (1 x A100)")
       for n in ("6", "12", "24", "24r")},
}


# GPU sizes this image cannot use (it is CUDA + NCCL).
NOT_CUDA = {"standard_nd96isr_mi300x_v5": "8 x AMD MI300X"}


def vm_size_info(name: str) -> VmSize | None:
    """The table's entry for `name` (any case); a VmSize with 0 GPUs for any size outside the N
    (GPU) families; None for an N-series size the table does not know. Raises UsageError for a
    retired size (naming a replacement) or a GPU that is not NVIDIA's."""
    key = name.strip().lower()
    if key in RETIRED:
        what, instead = RETIRED[key]
        raise UsageError(f"--vm_size {name}: {what}; use {instead}")
    if key in NOT_CUDA:
        raise UsageError(f"--vm_size {name}: {NOT_CUDA[key]}: the job image is CUDA/NCCL "
                         "(NVIDIA GPUs only)")
    if key in VM_SIZES:
        return VM_SIZES[key]
    match = re.fullmatch(r"(?:standard|basic)_([a-z])\w*", key)
    if match is None:
        raise UsageError(f"--vm_size {name}: not an Azure VM size (write it as "
                         "Standard_NC24ads_A100_v4, ...)")
    if match.group(1) != "n":
        return VmSize(name, 0)
    return None


def gpus_per_node(vm_size: str | None, gpus: int | None, what: str = "an MPI job") -> int | None:
    """Processes per node: the GPUs of `vm_size` (from the table) or `gpus` (--gpus_per_node,
    which may also run fewer processes than a known size has GPUs). None when neither is given.
    Raises UsageError for a size without GPUs, an unknown GPU size without --gpus_per_node, or
    more processes than GPUs."""
    if gpus is not None and gpus < 1:
        raise UsageError(f"--gpus_per_node {gpus}: give 1 or more (one worker per GPU)")
    if vm_size is None:
        return gpus
    info = vm_size_info(vm_size)
    if info is None:
        if gpus is None:
            raise UsageError(f"--vm_size {vm_size}: a GPU size this tool does not know: pass "
                             "--gpus_per_node K (its number of GPUs)")
        return gpus
    if info.gpus == 0:
        raise UsageError(f"--vm_size {vm_size} has no GPUs: {what} runs one Horovod worker per "
                         "GPU; use a GPU size such as Standard_NC24ads_A100_v4 (1 x A100), "
                         "Standard_NC96ads_A100_v4 (4 x A100) or Standard_ND96amsr_A100_v4 "
                         "(8 x A100)")
    if gpus is not None and gpus > info.gpus:
        raise UsageError(f"--gpus_per_node {gpus}: {info.describe()}")
    return gpus or info.gpus
