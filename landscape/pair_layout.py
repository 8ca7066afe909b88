"""The parts of a pair file (kind ``pair``) that both its writer (:mod:`landscape.pairs`) and its
figure (:mod:`landscape.pair_plots`) name: the parameter groups and the SSR variants."""

# The groups of :func:`landscape.pairs.pair_groups`, in the file's and the figure's order.
PAIR_GROUPS: tuple[str, ...] = (
    "bn_weight",
    "bn_bias",
    "clf_weight",
    "clf_bias",
    "other_weight",
    "other_bias",
)
# SSR-IA, SSR-IB, SSR-AB of :func:`landscape.pairs.ssr_over_epochs`.
SSR_VARIANTS = ("IA", "IB", "AB")
