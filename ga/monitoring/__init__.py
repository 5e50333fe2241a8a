"""The monitor (`ga monitor`, `ga.monitor`): particles found in frames arriving over time,
classified and measured, written as tables, figures and a page, with alerts.

- `loop`: the monitor itself: Monitor, its stages (read, detect, classify, measure, write,
  publish) over a FrameRecord per frame, resume, hooks, monitor() and MonitorResult;
- `feed`: frames into it, given at once in time order or polled as they settle (--watch);
- `columns`: frames.csv's, particles.csv's and alerts.csv's columns, by name;
- `detection`: background, threshold, morphology, components, geometry and crops of a frame's
  particles; `touching`: touching particles cut apart at their necks;
- `calibration`: the detection settings chosen from a sample of the frames, and the
  --show-detection figure; `truth`: detection scored against annotations;
- `alerts`: rules on frames.csv's columns over rolling windows;
- `outputs`: the trend, size and bin figures, monitor.html, operators' notes;
- `crops`: every kept particle's crop for labelling, and the polarity of a model's crops.

Frame sources and times (folders, TIFF pages, videos) are `ga.frames`, which inference shares.
"""
