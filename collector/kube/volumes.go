package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"k8s.io/client-go/rest"
)

// VolumeStats reads how many bytes persistent volume claims use.
type VolumeStats interface {
	// PVCUsage returns the used bytes of the claims mounted on nodes, by
	// namespace/claim. On a partial failure it returns what it could
	// read and the error.
	PVCUsage(ctx context.Context, nodes []string) (map[string]int64, error)
}

// KubeletVolumeStats reads the kubelets' summary API through the API
// server's node proxy (GET /api/v1/nodes/<node>/proxy/stats/summary),
// which needs get on nodes/proxy.
type KubeletVolumeStats struct {
	rc rest.Interface
}

// NewKubeletVolumeStats reads volume stats with the core/v1 REST client.
func NewKubeletVolumeStats(rc rest.Interface) *KubeletVolumeStats { return &KubeletVolumeStats{rc: rc} }

// summary is the part of the kubelet's stats/summary this package reads.
type summary struct {
	Pods []struct {
		Volume []struct {
			UsedBytes *uint64 `json:"usedBytes"`
			PVCRef    *struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"pvcRef"`
		} `json:"volume"`
	} `json:"pods"`
}

// PVCUsage implements VolumeStats.
func (k *KubeletVolumeStats) PVCUsage(ctx context.Context, nodes []string) (map[string]int64, error) {
	out := map[string]int64{}
	var errs []error
	for _, node := range nodes {
		raw, err := k.rc.Get().Resource("nodes").Name(node).SubResource("proxy").Suffix("stats/summary").Do(ctx).Raw()
		if err != nil {
			errs = append(errs, fmt.Errorf("volume stats of node %s: %w", node, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		var s summary
		if err := json.Unmarshal(raw, &s); err != nil {
			errs = append(errs, fmt.Errorf("decode volume stats of node %s: %w", node, err))
			continue
		}
		for _, p := range s.Pods {
			for _, v := range p.Volume {
				if v.PVCRef == nil || v.UsedBytes == nil {
					continue
				}
				// A claim mounted by several pods is reported by each; they
				// see the same volume.
				out[v.PVCRef.Namespace+"/"+v.PVCRef.Name] = int64(*v.UsedBytes)
			}
		}
	}
	return out, errors.Join(errs...)
}
