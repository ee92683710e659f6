import KilnGPU

/// The grid of a persistent Hopper GEMM (gemm_hopper, gemm_fp8_hopper): each CTA, or each cluster of `cluster` CTAs,
/// loops over work items (tiles, or pairs of M tiles with cluster 2), so the grid is as many as can be resident at once,
/// and no more than there are items.
struct PersistentGrid {
    let cluster: Int
    /// Clusters (or CTAs when cluster = 1) resident at once: the persistent grid's size.
    let slots: Int

    /// CTAs to launch for `items` work items: `cluster` × min(resident slots, items), a multiple of the cluster size.
    /// `maxCTAs` caps it (counting every CTA of a cluster); at least one cluster is launched.
    func ctas(items: Int, maxCTAs: Int? = nil) -> Int {
        let usable = max(1, min(slots, (maxCTAs ?? slots * cluster) / cluster))
        return cluster * min(usable, items)
    }
}

extension PersistentGrid {
    /// The slots of `kernel` (launched with `threads` and `sharedBytes`) on this context's GPU.
    init(kernel: Kernel, context: Context, cluster: Int, threads: Int, sharedBytes: Int) throws {
        // Cluster pairs must share a GPC, so fewer than #SMs/2 pairs fit at once: a persistent grid of all SMs
        // runs a second wave (measured at ~half speed). Size the grid by the driver's count of resident clusters,
        // or a quarter-size grid of pairs (always fits) when the driver cannot say.
        if cluster > 1 {
            let fit = try kernel.maxActiveClusters(gridX: context.info.multiprocessors - context.info.multiprocessors % cluster,
                                                   block: threads, sharedBytes: sharedBytes)
            self.init(cluster: cluster, slots: fit ?? context.info.multiprocessors / 4)
        } else {
            self.init(cluster: cluster, slots: context.info.multiprocessors)
        }
    }
}
