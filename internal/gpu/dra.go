package gpu

import "fmt"

// DRADriver is NVIDIA's DRA driver, the driver of the GPU devices a
// ResourceClaim's status.allocation.devices.results name.
const DRADriver = "gpu.nvidia.com"

// The device attributes NVIDIA's DRA driver publishes in its
// ResourceSlices that metering reads (by their names without the
// driver's domain).
const (
	// AttrType is "gpu" for a whole GPU, "mig" for a MIG device.
	AttrType = "type"
	// AttrProduct is the GPU model, as LabelProduct is for a node.
	AttrProduct = "productName"
	// AttrProfile is a MIG device's profile ("3g.40gb").
	AttrProfile = "profile"
)

// DRADevice is what a ResourceSlice says of one allocated device.
type DRADevice struct {
	Driver, Pool, Name string
	// Attributes are the device's string attributes, by name without the
	// driver's domain.
	Attributes map[string]string
}

// DeviceShare is the fraction of a physical GPU one allocated DRA device
// is, and its model: a whole GPU 1, a MIG device its profile's compute
// slices over the model's (as Share). ok is false for a device that is
// not an NVIDIA GPU (another driver's, or a channel of the GPU driver's):
// it is not metered. A GPU device of unknown type is an error naming it.
func DeviceShare(d DRADevice) (f Fraction, model string, ok bool, err error) {
	if d.Driver != DRADriver {
		return Fraction{}, "", false, nil
	}
	model = d.Attributes[AttrProduct]
	switch t := d.Attributes[AttrType]; t {
	case "gpu":
		return Whole, model, true, nil
	case "mig":
		c, err := MIGComputeSlices(d.Attributes[AttrProfile])
		if err != nil {
			return Fraction{}, "", false, fmt.Errorf("DRA device %s/%s/%s: %w", d.Driver, d.Pool, d.Name, err)
		}
		total := ComputeSlices(model)
		if c > total {
			return Fraction{}, "", false, fmt.Errorf("DRA device %s/%s/%s: %d compute slices, more than the %d of a %q GPU", d.Driver, d.Pool, d.Name, c, total, model)
		}
		return reduce(Fraction{c, total}), model, true, nil
	case "":
		return Fraction{}, "", false, fmt.Errorf("DRA device %s/%s/%s: no %q attribute, so its share of a GPU is unknown", d.Driver, d.Pool, d.Name, AttrType)
	default:
		// The driver's other device types (IMEX channels) are not GPUs.
		return Fraction{}, "", false, nil
	}
}
