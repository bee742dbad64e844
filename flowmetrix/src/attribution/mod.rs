//! Which workload a row belongs to: the cgroup a packet's socket is in, the container and
//! pod that cgroup belongs to, and on Kubernetes the pod's name and namespace. Used by the
//! decode stage (packet rows) and the flows stage (flow rows); it imports no stage.

pub mod kube;
