"""Run sizes: --smoke (does the harness work), --quick (about a minute) and the full run."""

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@dataclass(frozen=True)
class Profile:
    name: str
    data_bytes: int  # each big file in the lowest layer (sequential, random, mmap read; copy-up)
    random_file_bytes: int  # the lower file copied up and then written at random
    random_io_bytes: int  # bytes moved by the 4 KiB random read and write jobs
    fio_cap_seconds: int  # a cold fio run stops after this long, so a slow contender cannot stall
    files: int  # create, stat, unlink, ls -l
    include_layers: tuple  # find+stat over /usr/include spread over these layer counts
    include_files: int  # at most this many entries of /usr/include (0: all of it)
    missing_lookups: int  # lookups of missing names, under the deepest include stack
    walk_files: int  # files in the tree walked before reading the daemon's peak RSS
    walk_layers: int
    warm_seconds: float  # a warm fio read job loops over its file this long
    repeat: int
    slow_seconds: float  # a job that took longer than this for a contender is not repeated for it
    timeout: float  # seconds one timed run may take before it is aborted
    huge_dir_entries: int = 2000  # one directory this big, spread over 4 layers (hugedir job)
    workloads: bool = True  # the podman and build jobs (not in --smoke: they need podman, minutes)
    podman_fs_bytes: int = 2 * GIB  # the fresh ext4 each podman run gets (a sparse file)
    build_targets: tuple = ("laminafs", "lamina")  # what the build job compiles: the programs
    build_timeout: float = 1800  # seconds the build job may take

    @property
    def missing_layers(self):
        return max(self.include_layers)


SMOKE = Profile(
    name="smoke",
    data_bytes=2 * MIB,
    random_file_bytes=2 * MIB,
    random_io_bytes=256 * KIB,
    fio_cap_seconds=2,
    files=200,
    include_layers=(1, 4),
    include_files=300,
    missing_lookups=500,
    walk_files=1000,
    walk_layers=2,
    warm_seconds=0.1,
    repeat=1,
    slow_seconds=30,
    timeout=60,
    huge_dir_entries=2000,
    workloads=False,
)

QUICK = Profile(
    name="quick",
    data_bytes=64 * MIB,
    random_file_bytes=64 * MIB,
    random_io_bytes=16 * MIB,
    fio_cap_seconds=5,
    files=1000,
    include_layers=(1, 16, 128),
    include_files=2000,
    missing_lookups=5000,
    walk_files=10_000,
    walk_layers=4,
    warm_seconds=0.5,
    repeat=1,
    slow_seconds=30,
    timeout=120,
    huge_dir_entries=20_000,
    podman_fs_bytes=1 * GIB,
    build_targets=("lamina_common", "lamina_usage"),
    build_timeout=600,
)

FULL = Profile(
    name="full",
    data_bytes=1 * GIB,
    random_file_bytes=256 * MIB,
    random_io_bytes=64 * MIB,
    fio_cap_seconds=15,
    files=10_000,
    include_layers=(1, 16, 128),
    include_files=0,
    missing_lookups=20_000,
    walk_files=100_000,
    walk_layers=4,
    warm_seconds=1,
    repeat=3,
    slow_seconds=45,
    timeout=300,
    huge_dir_entries=100_000,
)

PROFILES = {p.name: p for p in (SMOKE, QUICK, FULL)}


def human_bytes(n):
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"
