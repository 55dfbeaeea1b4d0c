"""Fill fuzz/seeds/ with the test files: real checkpoints, their data.pkl, the malicious corpus."""

from __future__ import annotations

import pathlib
import shutil
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def main() -> None:
    SEEDS.mkdir(exist_ok=True)
    count = 0
    for path in sorted((ROOT / "tests" / "data").rglob("*")):
        if not path.is_file() or path.stat().st_size > 64 * 1024 or path.suffix not in (".pt", ".pkl"):
            continue
        count += 1
        shutil.copy(path, SEEDS / f"{count:04d}{path.suffix}")
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    if name.endswith("data.pkl"):
                        count += 1
                        (SEEDS / f"{count:04d}.pkl").write_bytes(archive.read(name))
    import sys

    sys.path.insert(0, str(ROOT))
    from tests.security_cases import build_cases  # the differential families of issue 12

    for case in build_cases("/nonexistent-canaries"):
        if len(case.data) <= 64 * 1024:
            count += 1
            (SEEDS / f"{count:04d}-{case.name}.pt").write_bytes(case.data)
    print(f"{count} seeds in {SEEDS}")


if __name__ == "__main__":
    main()
