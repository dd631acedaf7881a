"""``kwmlp triton-repo MODEL -o REPO``: a Triton Inference Server model repository."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("triton-repo", help="write a Triton Inference Server model repository for a model",
                       description="Write REPO/NAME (embeddings) and REPO/NAME_keywords (keyword head) for an "
                                   "exported .onnx. Needs pip install -e '.[distributed]'.")
    p.add_argument("model", help="an .onnx written by `kwmlp export`")
    p.add_argument("-o", "--output", required=True, help="the model repository folder (created if missing)")
    p.add_argument("--name", default="kwmlp", help="model name in the repository (default: kwmlp)")
    p.add_argument("--backend", choices=("onnxruntime", "python"), default="onnxruntime",
                   help="onnxruntime: platform onnxruntime_onnx; python: kwmlp-rt's runtime in Triton's Python backend")
    p.add_argument("--max-batch-size", type=int, default=16,
                   help="Triton's max_batch_size: the most clips (or keyword windows) one request batch holds; "
                        "capped by a TensorRT engine's largest profile (default 16)")
    p.add_argument("--preferred-batch-sizes", type=lambda s: tuple(int(v) for v in s.split(",")), default=(4, 8, 16),
                   help="dynamic batching, comma-separated (default 4,8,16)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000, help="dynamic batching delay (default 2000)")
    p.add_argument("--instances", type=int, default=1, help="instance_group count (default 1)")
    p.add_argument("--kind", choices=("auto", "gpu", "cpu"), default="auto",
                   help="instance kind (auto: GPU with --tensorrt, else CPU)")
    p.add_argument("--tensorrt", action="store_true",
                   help="ONNX Runtime's TensorRT execution accelerator (GPU servers)")
    p.add_argument("--no-keywords", action="store_true", help="leave out the keyword model")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from kwmlp.apps.serving.repository import RepositoryOptions, write_repository

    options = RepositoryOptions(
        name=args.name, backend=args.backend, max_batch_size=args.max_batch_size,
        preferred_batch_sizes=args.preferred_batch_sizes, max_queue_delay_us=args.max_queue_delay_us,
        instance_count=args.instances, kind=args.kind, tensorrt_accelerator=args.tensorrt,
        keywords=not args.no_keywords,
    )
    for path in write_repository(args.model, args.output, options):
        print(f"wrote {path}")
    return 0
