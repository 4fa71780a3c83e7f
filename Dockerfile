# One image for all binaries: multinic-kubelet-plugin, multinic-cni, multinic-controller, multinic.
# The same image as e2e/cluster/images.sh builds without Docker: both take their root filesystem
# from e2e/cluster/rootfs.sh, and USER/ENV/ENTRYPOINT here equal images.sh's
# MULTINIC_IMAGE_CONFIG (e2e/cluster/image-check.sh compares them).
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
# The CNI plugin is built on its own so that multinic-api is built for it without the `crd` feature
# (built with the others, cargo would unify the features and link kube into it).
RUN cargo build --release --locked -p multinic-cni \
 && cargo build --release --locked -p multinic-kubelet-plugin -p multinic-controller -p multinic-cli \
 && e2e/cluster/rootfs.sh /rootfs target/release

FROM scratch
COPY --from=build /rootfs/ /
USER 65532
ENV PATH=/usr/local/bin:/usr/bin:/bin
ENTRYPOINT ["/usr/local/bin/multinic"]
