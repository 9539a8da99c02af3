// Package registry moves images between the store and registries that
// speak the OCI distribution API (Docker registry v2): pull, push, login
// and logout, as podman and Docker do them.
//
// The protocol is go-containerregistry's (pkg/v1/remote): token and basic
// auth, manifest lists, retries with backoff on 5xx answers and reset
// connections, redirects to blob storage, cross-repository blob mounts.
// This package chooses what to fetch and send; image/store keeps what
// arrives (store.Pull verifies and unpacks blobs as they stream) and
// knows what to send (store.PushPlan).
//
// Configuration follows podman and skopeo:
//
//	credentials  --authfile, else $REGISTRY_AUTH_FILE, else
//	             $XDG_RUNTIME_DIR/containers/auth.json (login writes there);
//	             Docker's $DOCKER_CONFIG/config.json or
//	             ~/.docker/config.json is read too
//	certificates the system's CAs plus /etc/containers/certs.d/HOST[:PORT]/:
//	             *.crt are CAs, NAME.cert with NAME.key a client certificate
//	--tls-verify=false  plain HTTP, or HTTPS without checking the
//	             certificate (loopback registries may use plain HTTP
//	             anyway, as Docker allows)
package registry
