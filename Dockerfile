# One image for all binaries: multinic-kubelet-plugin, multinic-cni, multinic-controller, multinic.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
# The CNI plugin is built on its own so that multinic-api is built for it without the `crd` feature
# (built with the others, cargo would unify the features and link kube into it).
RUN cargo build --release --locked -p multinic-cni \
 && cargo build --release --locked -p multinic-kubelet-plugin -p multinic-controller -p multinic-cli

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/multinic-kubelet-plugin \
                  /src/target/release/multinic-cni \
                  /src/target/release/multinic-controller \
                  /src/target/release/multinic \
                  /usr/local/bin/
USER 65532
ENTRYPOINT ["/usr/local/bin/multinic"]
