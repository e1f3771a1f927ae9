package main

import (
	"fmt"
	"image/color"
	"os"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var targetColor = map[string]color.Color{
	"mtakit":  color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"postfix": color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
}

// writePlot writes a PNG with two panels, end-to-end and acceptance
// msgs/s against connections and against message size, one line per
// target and measure.
func writePlot(path string, runs []runResult, targets []string, m machineInfo) error {
	conns, err := seriesPlot(runs, targets, "conns", "client connections (log scale)", true,
		fmt.Sprintf("msgs/s vs connections (%s messages)", sizeOf(runs, "conns")),
		func(r runResult) float64 { return float64(r.Conns) }, strconv.Itoa)
	if err != nil {
		return err
	}
	sizes, err := seriesPlot(runs, targets, "size", "message size (log scale)", false,
		fmt.Sprintf("msgs/s vs message size (%s connections)", connsOf(runs, "size")),
		func(r runResult) float64 { return float64(r.Size) }, formatSize)
	if err != nil {
		return err
	}
	img := vgimg.New(vg.Points(1100), vg.Points(440))
	dc := draw.New(img)
	// White background: vgimg's default is transparent.
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	top := draw.Crop(dc, 0, 0, vg.Points(22), 0) // room for the footer
	foot := fmt.Sprintf("mtabench; durable spools; loopback; %d CPUs (%s), kernel %s, Postfix %s", m.CPUs, m.CPUModel, m.Kernel, m.Postfix)
	dc.FillText(draw.TextStyle{Color: color.Gray{0x55}, Font: conns.Title.TextStyle.Font, Handler: conns.Title.TextStyle.Handler},
		vg.Point{X: vg.Points(12), Y: vg.Points(6)}, foot)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Points(24), PadTop: vg.Points(8), PadLeft: vg.Points(8), PadRight: vg.Points(12), PadBottom: vg.Points(4)}
	cs := plot.Align([][]*plot.Plot{{conns, sizes}}, tiles, top)
	conns.Draw(cs[0][0])
	sizes.Draw(cs[0][1])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func sizeOf(runs []runResult, series string) string {
	for _, r := range runs {
		if r.Series == series {
			return formatSize(r.Size)
		}
	}
	return "?"
}

func connsOf(runs []runResult, series string) string {
	for _, r := range runs {
		if r.Series == series {
			return strconv.Itoa(r.Conns)
		}
	}
	return "?"
}

func seriesPlot(runs []runResult, targets []string, series, xlabel string, legendLeft bool, title string, x func(runResult) float64, label func(int) string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = "messages/s"
	p.X.Scale = plot.LogScale{}
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = legendLeft
	p.Legend.XOffs = vg.Points(-8)
	if legendLeft {
		p.Legend.XOffs = vg.Points(8)
	}
	var xs []float64
	ymax := 0.0
	for _, t := range targets {
		for _, measure := range []string{"end-to-end", "acceptance"} {
			var pts plotter.XYs
			for _, r := range runs {
				if r.Series != series || r.Target != t {
					continue
				}
				y := r.E2ERate
				if measure == "acceptance" {
					y = r.AcceptRate
				}
				pts = append(pts, plotter.XY{X: x(r), Y: y})
				ymax = max(ymax, y)
				xs = append(xs, x(r))
			}
			if len(pts) == 0 {
				continue
			}
			slices.SortFunc(pts, func(a, b plotter.XY) int { return int(a.X - b.X) })
			line, scatter, err := plotter.NewLinePoints(pts)
			if err != nil {
				return nil, err
			}
			c := targetColor[t]
			line.Color, scatter.Color = c, c
			line.Width = vg.Points(2)
			scatter.Shape = draw.CircleGlyph{}
			if measure == "acceptance" {
				line.Dashes = []vg.Length{vg.Points(5), vg.Points(4)}
				line.Width = vg.Points(1.2)
				scatter.Shape = draw.BoxGlyph{}
			}
			p.Add(line, scatter)
			p.Legend.Add(t+" "+measure, line, scatter)
		}
	}
	p.Y.Max = ymax * 1.3 // headroom for the legend
	p.Y.Tick.Marker = plainTicks{}
	slices.Sort(xs)
	var ticks []plot.Tick
	for _, v := range slices.Compact(xs) {
		ticks = append(ticks, plot.Tick{Value: v, Label: label(int(v))})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	return p, nil
}

// plainTicks are plot.DefaultTicks labelled without trailing zeros
// ("2500", not "2500.00").
type plainTicks struct{}

func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = strconv.FormatFloat(ts[i].Value, 'f', -1, 64)
		}
	}
	return ts
}
