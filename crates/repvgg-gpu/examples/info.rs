//! Prints the adapter summary and raw limits.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = repvgg_gpu::GpuContext::new()?;
    println!("{}", ctx.info());
    println!("{:#?}", ctx.limits());
    Ok(())
}
