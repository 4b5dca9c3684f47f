"""Paper B: LoRAILD, intermediate-layer distillation through LoRA adapters (Suzuki, Yamada, Tokunaga).

The intermediate-layer loss of eq. (3) compares the *first LoRA factor's* outputs ``A x`` of the
teacher and the student instead of going through a training-only linear map, so the "map" that
makes the dimensions match stays in the model at inference time.

Modules (one job each):

- :mod:`.config`: tasks, the nine methods of Table 1, :class:`~.config.RunConfig` and profiles.
- :mod:`.tasks`: the paper's data split (train 9:1 -> train/valid, official dev -> test), metrics.
- :mod:`.models`: teacher / student loading, LoRA on q/k/v (alpha = 2r, dropout 0.05).
- :mod:`.alignment`: Fixed / Average / Random step / Random epoch layer alignments.
- :mod:`.features`: forward hooks capturing the LoRA-A outputs.
- :mod:`.losses`: CE, KD (eq. 2), ILD (eq. 3), RAIL-KD_c / _l.
- :mod:`.curriculum`: loss weights per epoch (section 3.3).
- :mod:`.encoding`: tokenised splits, padding, resumable (optionally length-grouped) shuffling.
- :mod:`.teacher_cache`: frozen-teacher outputs computed once and reused.
- :mod:`.distill`: the student and eq. (4) in one ``accelerate``-prepared module.
- :mod:`.train`: stage 1 (teacher) and stage 2 (student), resumable, ``accelerate``-ready.
- :mod:`.sweep`: tasks x methods x seeds, skipping finished runs.
- :mod:`.stats`: one-sided permutation tests; :mod:`.clusters`: k-means / ARI per layer.
- :mod:`.tables`, :mod:`.figures`: Table 1, Table 2, learning curves; the paper's own numbers.
- :mod:`.cli`: ``python -m paperlib loraild ...`` and ``python -m paperlib sweep ...``.
"""
