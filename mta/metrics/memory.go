package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mtakit/mtakit/mta"
)

var (
	memUsageDesc  = prometheus.NewDesc("mtakit_memory_usage_bytes", "Memory the process is charged for, as the memory monitor last sampled it.", nil, nil)
	memLimitDesc  = prometheus.NewDesc("mtakit_memory_limit_bytes", "Memory monitor limits: hard, soft (load shedding above) and low (threshold).", []string{"limit"}, nil)
	memStateDesc  = prometheus.NewDesc("mtakit_memory_state", "Memory monitor state: 0 normal, 1 over the low threshold, 2 over the soft limit (refusing mail).", nil, nil)
	memOverDesc   = prometheus.NewDesc("mtakit_memory_over_limit_total", "Times memory usage crossed the soft limit.", nil, nil)
	memRefuseDesc = prometheus.NewDesc("mtakit_memory_refused_total", "Connections, transactions and injections refused while memory usage was over the soft limit.", nil, nil)
	memPurgeDesc  = prometheus.NewDesc("mtakit_memory_cache_purged_total", "Cache entries dropped by the memory monitor.", nil, nil)
)

// memoryCollector reads the server's memory monitor at each scrape.
type memoryCollector struct{ srv *mta.Server }

func (c *memoryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{memUsageDesc, memLimitDesc, memStateDesc, memOverDesc, memRefuseDesc, memPurgeDesc} {
		ch <- d
	}
}

func (c *memoryCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.MemoryStatus()
	ch <- prometheus.MustNewConstMetric(memUsageDesc, prometheus.GaugeValue, float64(st.Usage))
	ch <- prometheus.MustNewConstMetric(memLimitDesc, prometheus.GaugeValue, float64(st.Limits.Hard), "hard")
	ch <- prometheus.MustNewConstMetric(memLimitDesc, prometheus.GaugeValue, float64(st.Limits.Soft), "soft")
	ch <- prometheus.MustNewConstMetric(memLimitDesc, prometheus.GaugeValue, float64(st.Limits.LowThresh), "low")
	ch <- prometheus.MustNewConstMetric(memStateDesc, prometheus.GaugeValue, float64(st.State))
	ch <- prometheus.MustNewConstMetric(memOverDesc, prometheus.CounterValue, float64(st.OverLimit))
	ch <- prometheus.MustNewConstMetric(memRefuseDesc, prometheus.CounterValue, float64(st.Refused))
	ch <- prometheus.MustNewConstMetric(memPurgeDesc, prometheus.CounterValue, float64(st.Purged))
}
