// The OCI and Docker media types and annotation keys cubby reads and writes,
// and the architecture name of this host, shared by the store, the archive
// reader/writer and the registry client.
#pragma once

namespace cubby::image {

inline constexpr char kOciManifest[] = "application/vnd.oci.image.manifest.v1+json";
inline constexpr char kOciIndex[] = "application/vnd.oci.image.index.v1+json";
inline constexpr char kOciConfig[] = "application/vnd.oci.image.config.v1+json";
inline constexpr char kOciLayerTar[] = "application/vnd.oci.image.layer.v1.tar";
inline constexpr char kDockerManifest[] = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr char kDockerList[] = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr char kRefAnnotation[] = "org.opencontainers.image.ref.name";

// GOARCH-style name of the host, as image platforms spell it.
#if defined(__x86_64__)
inline constexpr char kHostArch[] = "amd64";
#elif defined(__aarch64__)
inline constexpr char kHostArch[] = "arm64";
#else
#error "unsupported architecture"
#endif

}  // namespace cubby::image
