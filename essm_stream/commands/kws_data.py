"""essm-stream kws-data: synthesise and cache the keyword-spotting data set (needs espeak-ng)."""
HELP = "build the keyword data set with espeak-ng (utterances, augmented clips' log-mel, test streams)"


def add_arguments(p):
    from essm_stream.commands._args import positive_float, positive_int

    p.add_argument("--out", default="runs/kws/data", help="directory for the cached data set")
    p.add_argument("--n-train", type=positive_int, default=12000, help="augmented training clips")
    p.add_argument("--n-test", type=positive_int, default=2400, help="augmented test clips (unseen voices)")
    p.add_argument("--stream-seconds", type=positive_float, default=360.0, help="length of the test stream")
    p.add_argument("--workers", type=positive_int, default=2, help="parallel espeak-ng processes")
    p.add_argument("--seed", type=int, default=0)


def run(a):
    import json

    from essm_stream.kws.build import DataConfig, build_dataset
    from essm_stream.kws.data import require_espeak

    from essm_stream.commands._args import check_outputs

    check_outputs(dirs=[("--out", a.out)])
    require_espeak()
    s = build_dataset(a.out, DataConfig(n_train=a.n_train, n_test=a.n_test, stream_test_s=a.stream_seconds,
                                        workers=a.workers, seed=a.seed))
    print(json.dumps(s, indent=1))
    print(f"wrote {a.out}")
    return 0
