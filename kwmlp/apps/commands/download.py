"""``kwmlp download [--dest DIR]``: the authors' trained kwmlp.pth, sha256-checked, into the data folder."""

from __future__ import annotations

import os


def add_parser(sub):
    from kwmlp.apps.checkpoint_download import CHECKPOINT_URL

    p = sub.add_parser("download", help="download the trained checkpoint kwmlp.pth (sha256-checked)",
                       description="Download KW-MLP-12 (kwmlp.pth, the HEAR 2021 submission's checkpoint, "
                                   "CC BY-SA 4.0) from the authors' repository, check its sha256 and write it "
                                   "atomically.")
    p.add_argument("--dest", default=None,
                   help="folder to write kwmlp.pth into (default: the data folder, $KWMLP_HOME or ~/.cache/kwmlp)")
    p.add_argument("--url", default=CHECKPOINT_URL, help="where to fetch it from (a mirror; the sha256 still applies)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from kwmlp.apps.checkpoint_download import CHECKPOINT_NAME, CHECKPOINT_SHA256, download, downloaded_checkpoint

    dest = os.path.join(args.dest, CHECKPOINT_NAME) if args.dest else downloaded_checkpoint()
    if download(args.url, dest):
        print(f"wrote {dest} (sha256 {CHECKPOINT_SHA256} verified)")
    else:
        print(f"{dest} is already there (sha256 verified)")
    return 0
