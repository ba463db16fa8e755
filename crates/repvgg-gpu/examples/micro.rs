//! TEMPORARY microbenchmark for lavapipe cost modelling. Not part of the crate.
use std::time::Instant;
use wgpu::util::DeviceExt;

fn main() {
    let path = std::env::args().nth(1).expect("shader path");
    let src = std::fs::read_to_string(&path).expect("read");
    let ctx = repvgg_gpu::GpuContext::new().expect("ctx");
    let device = ctx.device();
    let queue = ctx.queue();
    let n_inv: u32 = 12544;
    let x: Vec<f32> = (0..1 << 20).map(|i| (i % 97) as f32 * 0.01).collect();
    let xb = device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: bytemuck::cast_slice(&x), usage: wgpu::BufferUsages::STORAGE });
    let ub = device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: bytemuck::cast_slice(&x[..16384]), usage: wgpu::BufferUsages::UNIFORM });
    let yb = device.create_buffer(&wgpu::BufferDescriptor { label: None, size: n_inv as u64 * 4, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false });
    let tex = device.create_texture_with_data(queue, &wgpu::TextureDescriptor {
        label: None, size: wgpu::Extent3d { width: 1024, height: 1024, depth_or_array_layers: 1 }, mip_level_count: 1, sample_count: 1,
        dimension: wgpu::TextureDimension::D2, format: wgpu::TextureFormat::R32Float, usage: wgpu::TextureUsages::TEXTURE_BINDING, view_formats: &[] },
        wgpu::util::TextureDataOrder::LayerMajor, bytemuck::cast_slice(&x));
    let view = tex.create_view(&Default::default());
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor { label: None, source: wgpu::ShaderSource::Wgsl(src.clone().into()) });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor { label: None, layout: None, module: &module, entry_point: Some("main"), compilation_options: Default::default(), cache: None });
    let layout = pipeline.get_bind_group_layout(0);
    let mut entries = vec![];
    let names = ["x", "t", "u", "y"];
    for (i, name) in names.iter().enumerate() {
        if src.contains(&format!("@binding({i})")) {
            let r = match *name { "x" => xb.as_entire_binding(), "t" => wgpu::BindingResource::TextureView(&view), "u" => ub.as_entire_binding(), _ => yb.as_entire_binding() };
            entries.push(wgpu::BindGroupEntry { binding: i as u32, resource: r });
        }
    }
    let bg = device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &layout, entries: &entries });
    for it in 0..4 {
        let t = Instant::now();
        let mut enc = device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(n_inv / 64, 1, 1);
        }
        queue.submit([enc.finish()]);
        device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
        if it > 0 { println!("{path}: {:.2} ms", t.elapsed().as_secs_f64() * 1e3); }
    }
}
