# A loss-landscape laboratory (see README.md and ../shared/DESIGN.md).
#
# Output paths, keyed by what produced them:
#   results/{dataset}/{model}/{run}/checkpoints/epoch{epoch}.pt          train_model
#   results/{dataset}/{model}/{run}/history.h5                           export_history
#   results/{dataset}/{model}/{run}/directions/epoch{epoch}/{direction}.h5   make_direction,
#                                          mine_direction (kinds gradient and mined)
#   results/{dataset}/{model}/{run}/curves/epoch{epoch}/{curve}.h5       compute_curve
#   results/{dataset}/{model}/{run}/surfaces/epoch{epoch}/{surface}.h5   merge_surface
#       (from temporary shards .../{surface}.shards/{i}-of-{n}.h5 of compute_surface_shard)
#   results/figures/curves/{dataset}/{model}/{run}/epoch{epoch}/{curve}.png  plot_curve
#   results/figures/surfaces/{dataset}/{model}/{run}/epoch{epoch}/{surface}.png  plot_surface
#   results/figures/surfaces/{dataset}/{model}/{run}/epoch{epoch}/{surface}/{view}.png,
#       .../epoch{epoch}/{surface}.html (views contour, contourf, heatmap, surface3d; the
#       interactive page) and results/{dataset}/{model}/{run}/surfaces/epoch{epoch}/{surface}.vtp
#                                          export_surface
#   results/{dataset}/{model}/{run}/hessian/epoch{epoch}/{spectrum,density,trace}.h5
#                                          compute_spectrum, compute_density, compute_trace
#   results/figures/hessian/{dataset}/{model}/{run}/epoch{epoch}/density.png  plot_density
#   results/{dataset}/{model}/{run}/hessian/epoch{epoch}/loss_change.h5  compute_loss_change
#   results/{dataset}/{model}/{run}/soa/epoch{epoch}/{soa}.h5             compute_soa
#   results/figures/hessian/{dataset}/{model}/{run}/epoch{epoch}/loss_change.png  plot_loss_change
#   results/{dataset}/{model}/{run}/angles/epoch{epoch}.h5                compute_angles
#   results/figures/angles/{dataset}/{model}/{run}/epoch{epoch}.png      plot_angles
#   results/{dataset}/{model}/{run}/hessian/epoch{epoch}/cosines.h5      compute_cosines
#   results/figures/hessian/{dataset}/{model}/{run}/epoch{epoch}/cosines.png  plot_cosines
#   results/{dataset}/{model}/{run}/sweeps/epoch{epoch}/{sweep}.h5       compute_sweep
#   results/figures/sweeps/{dataset}/{model}/{run}/epoch{epoch}/{sweep}.png  plot_sweep
#   results/tables/curve_taxonomy.csv                                      write_curve_table
#   results/figures/tables/curve_taxonomy.png                              plot_curve_table
#   results/tables/claims.csv                                              write_claims
#   results/pairs/{pair}.h5                                              compute_pair
#   results/figures/pairs/{pair}.png                                     plot_pair
#   results/mode_connect/{name}.h5                                       compute_mode_connect
#   results/figures/mode_connect/{name}.png                              plot_mode_connect
#   results/{dataset}/{model}/{run}/theory/epoch{epoch}.h5               compute_theory
#   results/figures/theory/{dataset}/{model}/{run}/epoch{epoch}.png      plot_theory
#   results/federated/{dataset}/alpha{alpha}/{algorithm}/seed{seed}.h5   run_federated
#   results/tables/federated.csv                                         write_federated_table
#   results/figures/federated/table.png                                  plot_federated_table
#   results/figures/federated/accuracy_{dataset}.png                     plot_federated_accuracy
#   results/{dataset}/{model}/{run}/trajectories/epoch{epoch}/{surface}.h5  compute_trajectory
#   results/figures/trajectories/{dataset}/{model}/{run}/epoch{epoch}/{surface}.png  plot_trajectory
#   results/{dataset}/{model}/{run}/eigenmaps/epoch{epoch}/{eigenmap}.h5  merge_eigenmap
#       (from temporary shards .../{eigenmap}.shards/{i}-of-{n}.h5 of compute_eigenmap_shard)
#   results/figures/eigenmaps/{dataset}/{model}/{run}/epoch{epoch}/{eigenmap}.png  plot_eigenmap
#   results/{dataset}/{model}/{run}/hessian/epoch{epoch}/group_curvature.h5  compute_group_curvature
#   results/tables/group_curvature.csv                                   write_group_curvature_table
#   results/{dataset}/{model}/{run}/weight_stats.h5                      compute_weight_stats
#   results/figures/weight_stats/{dataset}/{model}/{run}.png             plot_weight_stats
#   results/catalog.csv                                                  write_catalog
# Logs and benchmarks follow the same tree under logs/{rule}/ and logs/benchmark/{rule}/.


from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"


scattergather:
    surface=config["surface_shards"],


include: "rules/train.smk"
include: "rules/directions.smk"
include: "rules/landscape.smk"
include: "rules/hessian.smk"
include: "rules/experiments_second_order.smk"
include: "rules/figures.smk"
include: "rules/sweeps.smk"
include: "rules/pairs.smk"
include: "rules/mode_connect.smk"
include: "rules/theory.smk"
include: "rules/federated.smk"
include: "rules/exports.smk"
include: "rules/analysis.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        rules.write_catalog.output.csv,
        surface_export_targets(),
