namespace Isr.Format;
